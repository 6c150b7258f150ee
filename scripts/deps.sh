#!/bin/sh
# Installs the Debian packages the build and the tests need, once. Idempotent:
# it asks dpkg first and calls apt-get only for what is missing. Run as a
# non-root user it installs nothing and prints the command to run instead.
# Usage: scripts/deps.sh [base|luajit|nginx|bench|all]...
set -eu

want_base="lua5.4 liblua5.4-dev lua5.1 lua5.3 lua-cjson lua-socket lua-argparse lua-busted lua-check
  libcurl4-openssl-dev uuid-dev pkg-config gcc make curl ca-certificates
  nginx-core libnginx-mod-http-lua openssl luajit2 libluajit2-5.1-dev liblua5.1-0-dev liblua5.3-dev valgrind
  luarocks postgresql lua-sql-sqlite3 lua-sql-postgres sqlite3 lua-argparse clang libclang-rt-14-dev
  chromium fonts-dejavu-core tinyproxy lua-luv"
want_luajit="luajit2 libluajit2-5.1-dev"
want_nginx="nginx-core libnginx-mod-http-lua openssl"
want_bench="wrk valgrind nginx-core libnginx-mod-http-lua"
want_memcheck="valgrind"

sets="${*:-base}"
pkgs=""
for s in $sets; do
  case "$s" in
    base) pkgs="$pkgs $want_base" ;;
    luajit) pkgs="$pkgs $want_luajit" ;;
    nginx) pkgs="$pkgs $want_nginx" ;;
    bench) pkgs="$pkgs $want_bench" ;;
    memcheck) pkgs="$pkgs $want_memcheck" ;;
    all) pkgs="$pkgs $want_base $want_luajit $want_nginx $want_bench" ;;
    *) echo "deps.sh: unknown set '$s' (base, luajit, nginx, bench, all)" >&2; exit 2 ;;
  esac
done

missing=""
# The dashboard's browser tests run node and npm (spec/browser/). A Node.js
# that came from elsewhere (with its own npm) is kept; only without one are
# Debian's installed.
case " $pkgs " in
  *" chromium "*) command -v npm >/dev/null 2>&1 || pkgs="$pkgs nodejs npm" ;;
esac
for p in $pkgs; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "deps.sh: missing Debian packages:$missing" >&2
  echo "deps.sh: install them with: sudo apt-get install -y$missing" >&2
  exit 1
fi
echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# The package lists may be absent on a fresh machine; update once, quietly.
apt-get update -qq >/dev/null || apt-get update
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
