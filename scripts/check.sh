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
  "$interp" "$BUSTED" --output=utfTerminal "$@" >"$log" 2>&1
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

run_suite "$LUA" "$LUA" spec
# The emulator is pure Lua and must also run on the 5.1 API (LuaJIT, nginx).
if command -v lua5.1 >/dev/null 2>&1; then
  run_suite "lua5.1 emulator" lua5.1 spec/sandbox_emulator_spec.lua
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
