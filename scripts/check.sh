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

# luacheck counts as one check: clean or not.
dirs=""
for d in lua bin spec examples bench; do [ -e "$d" ] && dirs="$dirs $d"; done
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
  # shellcheck disable=SC2086
  timeout --kill-after=10 900 $interp "$BUSTED" --output=utfTerminal "$@" >"$log" 2>&1
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
  LUA_CPATH="./build/luajit/?.so;;" run_suite "luajit" luajit spec/core_spec.lua spec/partner_retry_spec.lua \
    spec/partner_client_spec.lua spec/curl_transport_spec.lua spec/journey_spec.lua spec/partner_tls_spec.lua \
    spec/readme_spec.lua spec/async_spec.lua spec/fs_spec.lua spec/derive_key_spec.lua spec/derived_keys_spec.lua \
    spec/store_spec.lua spec/journey_store_spec.lua
fi
# The rockspec builds and installs a rock that loads (kept true with the tree).
if command -v luarocks >/dev/null 2>&1; then
  tree=$(mktemp -d)
  # luarocks builds in the source directory; a scratch copy keeps ours clean.
  src=$(mktemp -d)
  cp -r csrc lua bin docs examples rockspec "$src/"
  incdir=$(pkg-config --variable=includedir libcurl 2>/dev/null)
  multi=$(gcc -print-multiarch 2>/dev/null)
  [ -n "$multi" ] && [ -f "/usr/include/$multi/curl/curl.h" ] && incdir="/usr/include/$multi"
  if (cd "$src" && luarocks --lua-version 5.4 --tree "$tree" make --deps-mode none \
       rockspec/endaoment-partner-scm-1.rockspec CURL_INCDIR="$incdir") >"$log" 2>&1 &&
     LUA_PATH="$tree/share/lua/5.4/?.lua;;" LUA_CPATH="$tree/lib/lua/5.4/?.so;;" lua5.4 -e \
       'local p = require "endaoment.partner"; require "endaoment.partner.curl"; require "endaoment.partner.fs"
        require "endaoment.partner.journey"; require "endaoment.sandbox"; assert(p.is_uuid(p.uuid4()))' >>"$log" 2>&1 &&
     [ -x "$tree/bin/endaoment-journey" ] && [ -x "$tree/bin/endaoment-sandbox" ]; then
    passed=$((passed + 1)); echo "== rock install: ok"
  else
    cat "$log"; echo "== rock install: FAILED"; failed=$((failed + 1))
  fi
  rm -rf "$tree" "$src"
fi
# Our C code under valgrind: an error or a definite leak fails the suite even
# when every assertion passed (valgrind's exit code).
if command -v valgrind >/dev/null 2>&1; then
  run_suite "valgrind" "valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 $LUA" \
    spec/core_spec.lua spec/curl_transport_spec.lua spec/partner_retry_spec.lua spec/partner_client_spec.lua \
    spec/async_spec.lua spec/fs_spec.lua spec/derive_key_spec.lua spec/journey_store_spec.lua
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

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
