#!/bin/sh
# The fuzz harnesses of fuzz/ (fuzz/README.md, docs/fuzzing.md).
#
#   scripts/fuzz.sh run [harness...]   each harness for FUZZ_SECONDS (default 180); the
#                                      corpus grows in fuzz/corpus/<h>/; every crash is
#                                      minimised into fuzz/regressions/<h>/
#   scripts/fuzz.sh smoke              every harness briefly (FUZZ_SMOKE_SECONDS each, 7)
#                                      from the seeds, into a scratch corpus
#   scripts/fuzz.sh replay             every file of fuzz/regressions/<h>/ through its harness
#   scripts/fuzz.sh sandbox            random and mutated HTTP requests against the sandbox
#   scripts/fuzz.sh coverage           line coverage of csrc/ (specs + corpus), gcc --coverage
#   scripts/fuzz.sh check              smoke + replay + scripts/sanitize.sh + sandbox, as
#                                      scripts/check.sh runs it; ends "fuzz-check: N passed, N failed"
#
# Expects the harnesses built (make fuzz-build fuzz-seeds); `check` builds them itself.
set -u
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
COV_BUILD=${COV_BUILD:-build/coverage}
HARNESSES="prepare encode money ids headers utf8 derive decode curl"
BIN="$FUZZ_BUILD/bin"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "fuzz: $1: ok"; }
fail() { failed=$((failed + 1)); echo "fuzz: $1: FAILED"; }

# Largest input libFuzzer makes, per harness: room for the deepest bodies,
# 1024-byte natural ids, header padding selectors.
max_len() {
  case "$1" in
    prepare|encode|decode|curl) echo 4096 ;;
    derive) echo 2100 ;;
    ids) echo 1024 ;;
    *) echo 512 ;;
  esac
}

# libFuzzer options shared by every mode.
fuzz_opts() { # harness
  echo "-dict=$FUZZ_BUILD/dict/$1.dict -max_len=$(max_len "$1") -timeout=10 -rss_limit_mb=2560 -print_final_stats=1"
}

# While fuzzing, inputs that only re-trip an open, known bug are skipped (the
# curl harness: libcurl issue #11101); replay runs without this, so the
# regression inputs of open bugs still fail.
fuzzing_env() { FUZZ_SKIP_KNOWN=1; export FUZZ_SKIP_KNOWN; }

# Sanitizer options: any report is fatal; libFuzzer turns it into a crash.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

need_bins() {
  for h in $HARNESSES; do
    if [ ! -x "$BIN/fuzz_$h" ]; then
      echo "fuzz: $BIN/fuzz_$h is missing: make fuzz-build fuzz-seeds" >&2
      exit 2
    fi
  done
}

stat_of() { # log, stat name
  grep -E "^stat::$2:" "$1" | tail -n 1 | awk '{print $2}'
}

# ---- smoke: bounded, from the seeds, nothing written outside build/ ----
smoke() {
  secs=${FUZZ_SMOKE_SECONDS:-7}
  # per run, so that two checks running at once in one checkout do not collide
  scratch="$FUZZ_BUILD/smoke/run.$$"
  for h in $HARNESSES; do
    dir="$scratch/$h"
    rm -rf "$dir"
    mkdir -p "$dir/corpus"
    log="$dir/log"
    # shellcheck disable=SC2046
    "$BIN/fuzz_$h" $(fuzz_opts "$h") -max_total_time="$secs" -artifact_prefix="$dir/" \
      "$dir/corpus" "$FUZZ_BUILD/seeds/$h" >"$log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
      pass "smoke $h ($(stat_of "$log" number_of_executed_units) runs, $(stat_of "$log" average_exec_per_sec)/s)"
      rm -rf "$dir"
    else
      grep -E "PROPERTY|ERROR|SUMMARY|runtime error|Test unit written" "$log" | head -n 20
      tail -n 40 "$log"
      echo "fuzz: to keep it as a regression: sh scripts/fuzz.sh keep $h $dir/<crash-file>"
      fail "smoke $h (exit $rc)"
    fi
  done
  rmdir "$scratch" 2>/dev/null
}

regression_files() { # harness
  [ -d "fuzz/regressions/$1" ] || return 0
  find "fuzz/regressions/$1" -type f ! -name '.*' ! -name '*.md' | sort
}

# ---- replay: every regression input through its sanitized harness ----
replay() {
  for h in $HARNESSES; do
    files=$(regression_files "$h")
    [ -n "$files" ] || continue
    n=$(echo "$files" | wc -l)
    log="$FUZZ_BUILD/replay-$h.$$.log"
    # shellcheck disable=SC2086
    if "$BIN/fuzz_$h" -runs=1 -timeout=30 $files >"$log" 2>&1; then
      pass "replay $h ($n regression inputs)"
      rm -f "$log"
    else
      grep -E "PROPERTY|ERROR|SUMMARY|runtime error|Running:" "$log" | tail -n 20
      fail "replay $h"
    fi
  done
}

# ---- keep: minimise a crash into fuzz/regressions/<h>/ ----
keep() { # harness, crash file
  h=$1
  crash=$2
  mkdir -p "fuzz/regressions/$h" "$FUZZ_BUILD/crashes/$h"
  min="$FUZZ_BUILD/crashes/$h/min-$(basename "$crash")"
  case "$(basename "$crash")" in
    crash-*)
      "$BIN/fuzz_$h" -minimize_crash=1 -max_total_time="${FUZZ_MINIMIZE_SECONDS:-60}" \
        -exact_artifact_path="$min" "$crash" >"$min.log" 2>&1 || true
      ;;
  esac
  [ -s "$min" ] || cp "$crash" "$min"
  name=$(sha1sum "$min" | cut -c1-16)
  if [ -f "fuzz/regressions/$h/$name" ]; then
    echo "fuzz: $h: $crash minimises to the known regression fuzz/regressions/$h/$name"
  else
    cp "$min" "fuzz/regressions/$h/$name"
    echo "fuzz: $h: new regression fuzz/regressions/$h/$name ($(wc -c <"$min") bytes, from $crash)"
  fi
}

# ---- run: FUZZ_SECONDS per harness, the corpus kept in fuzz/corpus/ ----
run() {
  total=${FUZZ_SECONDS:-180}
  report=""
  found=0
  for h in ${*:-$HARNESSES}; do
    corpus="fuzz/corpus/$h"
    crashes="$FUZZ_BUILD/crashes/$h"
    mkdir -p "$corpus" "$crashes"
    left=$total
    n=0
    rounds=0
    execs=0
    while [ "$left" -gt 0 ] && [ "$rounds" -lt 5 ]; do
      rounds=$((rounds + 1))
      t0=$(date +%s)
      log="$crashes/run.log"
      before=$(find "$crashes" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort)
      echo "fuzz: $h: ${left}s"
      # shellcheck disable=SC2046
      "$BIN/fuzz_$h" $(fuzz_opts "$h") -max_total_time="$left" -artifact_prefix="$crashes/" \
        "$corpus" "$FUZZ_BUILD/seeds/$h" >"$log" 2>&1
      rc=$?
      el=$(( $(date +%s) - t0 ))
      left=$((left - el))
      e=$(stat_of "$log" average_exec_per_sec)
      [ -n "$e" ] && execs=$e
      [ "$rc" -eq 0 ] && break
      grep -E "PROPERTY|ERROR|SUMMARY|runtime error" "$log" | head -n 5
      after=$(find "$crashes" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort)
      new=$(printf '%s\n%s\n' "$before" "$after" | sort | uniq -u)
      [ -n "$new" ] || { tail -n 20 "$log"; break; }
      for c in $new; do keep "$h" "$c"; n=$((n + 1)); found=$((found + 1)); done
    done
    size=$(find "$corpus" -type f | wc -l)
    report="$report$(printf '%-8s %8s exec/s  corpus %6s  crashes %s' "$h" "$execs" "$size" "$n")
"
  done
  echo "fuzz: per harness (${total}s each):"
  printf '%s' "$report"
  [ "$found" -eq 0 ]
}

# ---- the sandbox's HTTP parser, over loopback ----
sandbox() {
  log="$FUZZ_BUILD/sandbox-http.$$.log"
  mkdir -p "$FUZZ_BUILD"
  if LUA_PATH="./lua/?.lua;./lua/?/init.lua;./?.lua;;" timeout --kill-after=10 180 \
      lua5.4 fuzz/http_mutator.lua --requests "${FUZZ_HTTP_REQUESTS:-2000}" --seconds "${FUZZ_HTTP_SECONDS:-30}" \
      >"$log" 2>&1; then
    tail -n 3 "$log"
    pass "sandbox http ($(grep -E '^http_mutator: ' "$log" | tail -n 1 | sed 's/^http_mutator: //'))"
  else
    tail -n 40 "$log"
    fail "sandbox http"
  fi
}

# ---- coverage ----
coverage() {
  make --no-print-directory -s coverage-build || exit 1
  find "$COV_BUILD" -name '*.gcda' -delete
  specs=${COVERAGE_SPECS:-spec}
  echo "coverage: the specs ($specs) on $COV_BUILD"
  # shellcheck disable=SC2086
  LUA_PATH="./lua/?.lua;./lua/?/init.lua;./?.lua;;" LUA_CPATH="./$COV_BUILD/?.so;;" \
    timeout --kill-after=10 1800 lua5.4 /usr/bin/busted --ignore-lua -o TAP $specs >"$COV_BUILD/specs.log" 2>&1
  grep -E '^1\.\.|^not ok' "$COV_BUILD/specs.log" | head -n 10
  # One process per directory: an input that crashes (an open regression) loses
  # only its own directory's counts (gcov writes them at exit).
  for h in $HARNESSES; do
    for d in "$FUZZ_BUILD/seeds/$h" "fuzz/corpus/$h" "fuzz/regressions/$h"; do
      [ -d "$d" ] || continue
      if ! ( "$COV_BUILD/bin/fuzz_$h" "$d" >"$COV_BUILD/replay.log" 2>&1 ) 2>/dev/null; then
        echo "coverage: $d crashed the plain build (an open regression?): its counts are lost"
      fi
      tail -n 1 "$COV_BUILD/replay.log"
    done
  done
  # gcov over the shared objects: "File 'csrc/x.c'" then "Lines executed:P% of N"
  for src in csrc/*.c; do
    [ -f "$COV_BUILD/obj/$(basename "$src" .c).gcno" ] || continue
    gcov -n -o "$COV_BUILD/obj" "$src" 2>/dev/null
  done | awk '
    /^File / { f = $2; gsub(/[\047]/, "", f); sub(/.*csrc\//, "csrc/", f); next }
    /^Lines executed:/ && f ~ /^csrc\/.*\.c$/ {
      split($2, a, ":"); pct = a[2]; sub(/%/, "", pct); n = $4
      hit = int(pct * n / 100 + 0.5)
      printf "%-24s %7.2f%%  %5d of %5d lines\n", f, pct, hit, n
      tot_hit += hit; tot_n += n
      if (f ~ /^csrc\/core/) { core_hit += hit; core_n += n }
      if (f ~ /^csrc\/curl/) { curl_hit += hit; curl_n += n }
      f = ""
    }
    END {
      if (core_n) printf "%-24s %7.2f%%  %5d of %5d lines\n", "core (core*.c)", 100 * core_hit / core_n, core_hit, core_n
      if (curl_n) printf "%-24s %7.2f%%  %5d of %5d lines\n", "curl (curl*.c)", 100 * curl_hit / curl_n, curl_hit, curl_n
      if (tot_n) printf "%-24s %7.2f%%  %5d of %5d lines\n", "total csrc/*.c", 100 * tot_hit / tot_n, tot_hit, tot_n
    }'
  echo "coverage: lines never run: gcov -t -o $COV_BUILD/obj csrc/<file>.c | grep '#####'"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  smoke) need_bins; fuzzing_env; smoke ;;
  replay) need_bins; replay ;;
  run) need_bins; fuzzing_env; run "$@"; exit $? ;;
  keep) need_bins; keep "$@"; exit 0 ;;
  sandbox) sandbox ;;
  coverage) coverage; exit 0 ;;
  check)
    t0=$(date +%s)
    blog="$FUZZ_BUILD.build.$$.log"
    if make --no-print-directory -s fuzz-build fuzz-seeds >"$blog" 2>&1; then
      rm -f "$blog"
      fuzzing_env
      smoke
      unset FUZZ_SKIP_KNOWN
      replay
    else
      cat "$blog"
      rm -f "$blog"
      fail "building the harnesses"
    fi
    slog="$FUZZ_BUILD/sanitize.$$.log"
    mkdir -p "$FUZZ_BUILD"
    if sh scripts/sanitize.sh >"$slog" 2>&1; then
      tail -n 2 "$slog" | head -n 1
      pass "sanitizers (ASan+UBSan busted suites)"
    else
      tail -n 80 "$slog"
      fail "sanitizers (ASan+UBSan busted suites)"
    fi
    rm -f "$slog"
    sandbox
    echo "fuzz-check: $(( $(date +%s) - t0 )) s"
    ;;
  *)
    echo "usage: scripts/fuzz.sh run [harness...] | smoke | replay | keep <harness> <file> | sandbox | coverage | check" >&2
    exit 2
    ;;
esac
echo "fuzz-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
