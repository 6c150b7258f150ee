#!/bin/sh
# Runs luacheck and every busted suite; prints one line "N passed, N failed"
# summed over all of them, and exits non-zero if anything failed.
set -u
LUA=${LUA:-lua5.4}
BUILD=${BUILD:-build/$LUA}
BUSTED=${BUSTED:-/usr/bin/busted}
export LUA_PATH="./lua/?.lua;./lua/?/init.lua;./?.lua;;"
export LUA_CPATH="./$BUILD/?.so;;"

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The generated C tables and docs match lua/endaoment/partner/schema.lua.
if lua5.4 scripts/gen_schema.lua --check >"$log" 2>&1; then
  passed=$((passed + 1))
else
  cat "$log"
  echo "schema: generated files are stale: FAILED"
  failed=$((failed + 1))
fi

# luacheck counts as one check: clean or not.
dirs=""
for d in lua bin spec examples bench types; do [ -e "$d" ] && dirs="$dirs $d"; done
# shellcheck disable=SC2086
if luacheck --quiet $dirs >"$log" 2>&1; then
  passed=$((passed + 1))
else
  cat "$log"
  echo "luacheck: FAILED"
  failed=$((failed + 1))
fi

run_suite() { # name, interpreter, then busted arguments
  name=$1; shift
  echo "== suite: $name"
  interp=$1; shift
  # $interp may be a command with arguments (valgrind ... lua5.4).
  # A hung suite fails on its own after 15 minutes; the others still run.
  # --ignore-lua: run under $interp, not the interpreter .busted names for a bare `busted`.
  # shellcheck disable=SC2086
  timeout --kill-after=10 900 $interp "$BUSTED" --ignore-lua --output=utfTerminal "$@" >"$log" 2>&1
  rc=$?
  cat "$log"
  # busted's summary: "12 successes / 0 failures / 1 error / 0 pending : 0.2 seconds"
  line=$(grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "suite $name: no summary from busted (exit $rc)"
    failed=$((failed + 1))
    return
  fi
  s=$(echo "$line" | grep -oE '[0-9]+ success' | grep -oE '[0-9]+')
  f=$(echo "$line" | grep -oE '[0-9]+ failure' | grep -oE '[0-9]+')
  e=$(echo "$line" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
  passed=$((passed + s))
  failed=$((failed + f + e))
  if [ "$rc" -ne 0 ] && [ "$((f + e))" -eq 0 ]; then
    echo "suite $name: busted exited $rc"
    failed=$((failed + 1))
  fi
}

# The LuaJIT build first: the OpenResty spec loads it inside nginx.
# BUILD is exported for the main suite: name each tree explicitly.
luajit_ok=0
if command -v luajit >/dev/null 2>&1 && [ -f /usr/include/luajit-2.1/lua.h ]; then
  if make --no-print-directory build LUA=luajit BUILD=build/luajit >"$log" 2>&1; then
    luajit_ok=1
  else
    cat "$log"; echo "luajit build: FAILED"; failed=$((failed + 1))
  fi
fi

run_suite "$LUA" "$LUA" spec
# The C modules and the client on the 5.1 API (LuaJIT, as OpenResty uses it).
if [ "$luajit_ok" = 1 ]; then
  LUA_CPATH="./build/luajit/?.so;;" run_suite "luajit" luajit spec/core_spec.lua spec/core_decode_spec.lua \
    spec/partner_retry_spec.lua \
    spec/partner_client_spec.lua spec/curl_transport_spec.lua spec/journey_spec.lua spec/partner_tls_spec.lua \
    spec/readme_spec.lua spec/async_spec.lua spec/fs_spec.lua spec/derive_key_spec.lua spec/derived_keys_spec.lua \
    spec/store_spec.lua spec/journey_store_spec.lua spec/schema_parity_spec.lua spec/contract_spec.lua \
    spec/honest_sends_spec.lua spec/net_spec.lua spec/proxy_http2_spec.lua
fi
# The release as users get it: both rockspecs lint, a source rock packed offline from a
# clean copy, installed and loaded for Lua 5.1, 5.3, 5.4 and LuaJIT from outside the
# checkout (scripts/release-check.sh). Each step counts as one check.
if command -v luarocks >/dev/null 2>&1; then
  echo "== release check"
  LUA=$LUA sh scripts/release-check.sh >"$log" 2>&1
  cat "$log"
  line=$(grep -E '^release-check: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    passed=$((passed + $(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')))
    failed=$((failed + $(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')))
  else
    echo "release check: no summary"; failed=$((failed + 1))
  fi
else
  echo "== release check: FAILED (luarocks is not installed: scripts/deps.sh)"; failed=$((failed + 1))
fi
# Our C code under valgrind: an error or a definite leak fails the suite even
# when every assertion passed (valgrind's exit code).
if command -v valgrind >/dev/null 2>&1; then
  run_suite "valgrind" "valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 $LUA" \
    spec/core_spec.lua spec/core_decode_spec.lua spec/curl_transport_spec.lua spec/partner_retry_spec.lua \
    spec/partner_client_spec.lua spec/async_spec.lua spec/fs_spec.lua spec/derive_key_spec.lua spec/journey_store_spec.lua \
    spec/honest_sends_spec.lua spec/net_spec.lua spec/event_loop_spec.lua spec/proxy_http2_spec.lua
fi
# One source tree for every Lua: the 5.1 and 5.3 builds must compile cleanly.
for v in lua5.1 lua5.3; do
  if pkg-config --exists "$v" 2>/dev/null; then
    if make --no-print-directory build LUA="$v" BUILD="build/$v" >"$log" 2>&1 &&
       [ -f "build/$v/endaoment/partner/core.so" ] && [ -f "build/$v/endaoment/partner/curl.so" ]; then
      passed=$((passed + 1)); echo "== build $v: ok"
    else
      cat "$log"; echo "== build $v: FAILED"; failed=$((failed + 1))
    fi
  fi
done
# The emulator is pure Lua and must also run on the 5.1 API (LuaJIT, nginx).
if command -v lua5.1 >/dev/null 2>&1; then
  run_suite "lua5.1 emulator" lua5.1 spec/sandbox_emulator_spec.lua
fi

# ---- fuzzing and sanitizers (fuzz/README.md, docs/fuzzing.md) ---------------
# scripts/fuzz.sh check: a bounded smoke run of every libFuzzer harness from its
# seeds, every input of fuzz/regressions/ replayed, the C-touching suites on an
# ASan+UBSan build (scripts/sanitize.sh), the sandbox's HTTP parser fed mutated
# requests. Each of those counts as one check.
if command -v clang >/dev/null 2>&1; then
  echo "== fuzz and sanitizers"
  # bounded: about 100 s (plus the harnesses' first build); a hang fails after 10 minutes
  timeout --kill-after=10 600 sh scripts/fuzz.sh check >"$log" 2>&1
  cat "$log"
  line=$(grep -E '^fuzz-check: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    passed=$((passed + $(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')))
    failed=$((failed + $(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')))
  else
    echo "fuzz: no summary"; failed=$((failed + 1))
  fi
else
  echo "== fuzz and sanitizers: FAILED (clang is not installed: scripts/deps.sh)"; failed=$((failed + 1))
fi
# ---- end of fuzzing and sanitizers -------------------------------------------

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
