#!/bin/sh
# The busted suites that run our C code, on an AddressSanitizer + UBSan build
# of the three modules (build/asan, from fuzz/fuzz.mk: `make sanitize`).
#
# The modules are loaded by build/asan/bin/lua5.4, a small interpreter that
# carries the sanitizer runtime itself (fuzz/harness/asan_lua.c); it is put
# first in PATH, so the Lua children the specs start (sandbox servers, lock
# holders) run sanitized too, while sh, nginx or PostgreSQL do not. No
# LD_PRELOAD is used.
#
# Leak checking is on (detect_leaks=1): the interpreter closes its state on
# exit, so what LeakSanitizer still finds unreachable is a real leak. Any
# report from any process (ASan, UBSan, LSan; one file per process in
# build/asan/logs.<pid>) fails the run even when every assertion passed.
#
# Prints "sanitize: N passed, N failed" (one check: the suite) and exits non-zero on failure.
set -u
ASAN_BUILD=${ASAN_BUILD:-build/asan}
BUSTED=${BUSTED:-/usr/bin/busted}
SANITIZE_SPECS=${SANITIZE_SPECS:-"spec/core_spec.lua spec/core_decode_spec.lua spec/derive_key_spec.lua spec/fs_spec.lua spec/curl_transport_spec.lua spec/partner_client_spec.lua spec/async_spec.lua"}
root=$(pwd)
# per run, so that two runs at once in one checkout do not read each other's reports
logdir="$root/$ASAN_BUILD/logs.$$"

blog="$root/$ASAN_BUILD.build.$$.log"
if ! make --no-print-directory -s sanitize-build >"$blog" 2>&1; then
  cat "$blog"
  rm -f "$blog"
  echo "sanitize: the ASan build failed"
  echo "sanitize: 0 passed, 1 failed"
  exit 1
fi
rm -f "$blog"
rm -rf "$logdir"
mkdir -p "$logdir"

out=$(mktemp)
trap 'rm -f "$out"' EXIT

# halt_on_error/abort_on_error: the first report stops that process; log_path:
# reports from children land in files too (stderr may be a spec's pipe).
# shellcheck disable=SC2086
PATH="$root/$ASAN_BUILD/bin:$PATH" \
LUA_PATH="./lua/?.lua;./lua/?/init.lua;./?.lua;;" \
LUA_CPATH="./$ASAN_BUILD/?.so;;" \
ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:log_path=$logdir/asan" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logdir/ubsan" \
LSAN_OPTIONS="log_path=$logdir/lsan" \
  timeout --kill-after=10 900 lua5.4 "$BUSTED" --ignore-lua --output=utfTerminal $SANITIZE_SPECS >"$out" 2>&1
rc=$?
cat "$out"

line=$(grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$out" | tail -n 1)
# A report says ERROR, "runtime error" or SUMMARY. LeakSanitizer alone may log
# "Unable to get registers from thread N" when a process exits while one of its
# threads (libcurl's resolver) is ending: a warning about its own scan, shown, not failed.
reports=0
for r in "$logdir"/*; do
  [ -f "$r" ] || continue
  if grep -qE 'ERROR: |runtime error|SUMMARY: ' "$r"; then
    reports=$((reports + 1))
  else
    echo "sanitize: warning from $(basename "$r"): $(head -c 300 "$r" | tr '\n' ' ')"
    rm -f "$r"
  fi
done
ok=1
if [ -z "$line" ]; then
  echo "sanitize: no summary from busted (exit $rc)"
  ok=0
else
  f=$(echo "$line" | grep -oE '[0-9]+ failure' | grep -oE '[0-9]+')
  e=$(echo "$line" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
  if [ "$((f + e))" -ne 0 ] || [ "$rc" -ne 0 ]; then
    echo "sanitize: busted reported $f failures and $e errors (exit $rc)"
    ok=0
  fi
fi
if [ "$reports" -ne 0 ]; then
  for r in "$logdir"/*; do
    echo "---- sanitizer report $r"
    head -n 60 "$r"
  done
  echo "sanitize: $reports sanitizer report(s) in $logdir"
  ok=0
fi
if [ "$ok" = 1 ]; then
  rm -rf "$logdir"
  echo "sanitize: suites clean under ASan+UBSan: $line"
  echo "sanitize: 1 passed, 0 failed"
  exit 0
fi
echo "sanitize: 0 passed, 1 failed"
exit 1
