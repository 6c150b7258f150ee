#!/bin/sh
# make release-check: the release as a user gets it, offline.
#   1. rockspecs: the versioned rockspec is exactly what `make rockspec` makes from scm-1,
#      and `luarocks lint` passes on both;
#   2. pack: a source rock (.src.rock) from a clean copy of the tree (never the checkout itself,
#      so no csrc/*.o or ./endaoment/*.so is ever left here);
#   3. for Lua 5.1, 5.3, 5.4 and LuaJIT: the rock installed into a scratch tree
#      (luarocks --deps-mode none: lua-cjson and luasocket come from Debian), then, from a
#      directory outside the checkout with only `luarocks path --tree` set, every module
#      required from that tree, the installed endaoment-journey's --version, and the journey
#      in examples/plan.json run by the installed CLI against its embedded sandbox.
# Each step prints "== release <step>: ok|FAILED"; the last line is
# "release-check: N passed, N failed". Exit status 0 only if all passed.
#
#   sh scripts/release-check.sh            the whole check
#   sh scripts/release-check.sh pack DIR   only build the .src.rock into DIR (make rock)
set -u
cd "$(dirname "$0")/.." || exit 2
root=$(pwd)
LUA=${LUA:-lua5.4}
PKG=endaoment-partner
VERSION=$(sed -n 's/^#define EP_VERSION "\(.*\)"$/\1/p' csrc/core.h)
SCM=rockspecs/$PKG-scm-1.rockspec
REL=rockspecs/$PKG-$VERSION-1.rockspec
mode=${1:-check}
outdir=${2:-}

work=$(mktemp -d /tmp/epartner-release.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
log=$work/log
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "== release $1: ok"; }
bad() { failed=$((failed + 1)); [ -s "$log" ] && cat "$log"; echo "== release $1: FAILED${2:+: $2}"; }

if [ -z "$VERSION" ]; then echo "release-check: no EP_VERSION in csrc/core.h" >&2; exit 2; fi

# curl/curl.h lives under the multiarch include directory on Debian.
incdir=$(pkg-config --variable=includedir libcurl 2>/dev/null)
multi=$(gcc -print-multiarch 2>/dev/null)
[ -n "$multi" ] && [ -f "/usr/include/$multi/curl/curl.h" ] && incdir="/usr/include/$multi"

# What a checkout would leave behind if anything built in it.
stray() { find csrc -name '*.o' 2>/dev/null; ls -d endaoment ./*.rock 2>/dev/null; }
stray_before=$(stray)

pack() { # -> $work/pack/$PKG-$VERSION-1.src.rock
  stage=$work/stage/$PKG-$VERSION
  mkdir -p "$stage" "$work/pack"
  for p in csrc lua bin docs examples types rockspecs LICENSE README.md CHANGELOG.md; do
    [ -e "$p" ] && cp -R "$p" "$stage/"
  done
  find "$stage" \( -name '*.o' -o -name '*.so' -o -name '*.tmp' \) -exec rm -f {} + 2>/dev/null
  # The README holds the errors table and the host guides: the rock installs
  # docs/ (copy_directories), so the packed rock carries it there.
  cp README.md "$stage/docs/README.md"
  tar -C "$work/stage" -czf "$work/$PKG-$VERSION.tar.gz" "$PKG-$VERSION" &&
  "$LUA" scripts/rockspec.lua "$VERSION" --url "file://$work/$PKG-$VERSION.tar.gz" --dir "$PKG-$VERSION" \
    >"$work/$PKG-$VERSION-1.rockspec" &&
  (cd "$work/pack" && luarocks pack "$work/$PKG-$VERSION-1.rockspec") &&
  [ -f "$work/pack/$PKG-$VERSION-1.src.rock" ]
}

if [ "$mode" = pack ]; then
  [ -n "$outdir" ] || { echo "usage: scripts/release-check.sh pack DIR" >&2; exit 2; }
  if pack >"$log" 2>&1; then
    mkdir -p "$outdir" && cp "$work/pack/$PKG-$VERSION-1.src.rock" "$outdir/" &&
      echo "$outdir/$PKG-$VERSION-1.src.rock"
    exit $?
  fi
  cat "$log"; echo "pack: FAILED" >&2; exit 1
fi

# 1. rockspecs
: >"$log"
if [ -f "$SCM" ] && [ -f "$REL" ] &&
   "$LUA" scripts/rockspec.lua "$VERSION" >"$work/expected.rockspec" 2>>"$log" &&
   { cmp -s "$work/expected.rockspec" "$REL" ||
     { echo "$REL differs from what \`make rockspec\` makes from $SCM: run make rockspec" >>"$log"; false; }; } &&
   luarocks lint "$SCM" >>"$log" 2>&1 && luarocks lint "$REL" >>"$log" 2>&1; then
  ok "rockspecs (lint, $REL in sync)"
else
  bad "rockspecs"
fi

# 2. pack
: >"$log"
if pack >"$log" 2>&1; then ok "pack ($PKG-$VERSION-1.src.rock)"; packed=1; else bad "pack"; packed=0; fi
rock=$work/pack/$PKG-$VERSION-1.src.rock

# 3. install and load, per interpreter: name, luarocks --lua-version, interpreter, LUA_INCDIR
mkdir -p "$work/elsewhere"
cat >"$work/load.lua" <<'EOF'
local tree, version = arg[1], arg[2]
local function inside(path) return path and path:sub(1, #tree + 1) == tree .. "/" end
local function searchpath(name, path) -- package.searchpath is 5.2+ (and LuaJIT)
  local fname = name:gsub("%.", "/")
  for template in path:gmatch("[^;]+") do
    local file = template:gsub("%?", fname)
    local h = io.open(file)
    if h then h:close(); return file end
  end
end
local p = require "endaoment.partner"
assert(p.VERSION == version, "partner.VERSION is " .. tostring(p.VERSION) .. ", want " .. version)
for _, m in ipairs({ "endaoment.partner.core", "endaoment.partner.curl", "endaoment.partner.fs" }) do
  require(m)
  local path = searchpath(m, package.cpath)
  assert(inside(path), m .. " loaded from " .. tostring(path) .. ", not from the tree")
end
for _, m in ipairs({ "endaoment.partner.journey", "endaoment.partner.store", "endaoment.partner.async",
  "endaoment.sandbox", "endaoment.partner.transport.curl" }) do
  local mod = require(m)
  assert(type(mod) == "table", m)
end
local src = debug.getinfo(p.new, "S").source:sub(2)
assert(inside(src), "endaoment.partner loaded from " .. src .. ", not from the tree")
assert(p.is_uuid(p.uuid4()))
local c = p.new { api_key = "k", base_url = "http://127.0.0.1:9" }
assert(tostring(c):find("127.0.0.1:9", 1, true))
c:close()
local emu = require("endaoment.sandbox").new {}
local status = emu:handle("GET", "/v1/orgs/ein/530196605", {}, "")
assert(status == 200, "sandbox emulator answered " .. tostring(status))
print("loaded " .. p.VERSION .. " on " .. (rawget(_G, "jit") and jit.version or _VERSION))
EOF

check_interp() { # name luaversion interpreter [incdir]
  name=$1; ver=$2; interp=$3; luainc=${4:-}
  : >"$log"
  if [ "$packed" != 1 ]; then bad "install $name" "no rock"; return; fi
  if ! command -v "$interp" >/dev/null 2>&1; then bad "install $name" "$interp is not installed (scripts/deps.sh)"; return; fi
  tree=$work/tree-$name
  cfg=""
  if [ -n "$luainc" ]; then
    # A LuaJIT tree: its headers, and wrappers in bin/ that run luajit.
    cfg=$work/luarocks-$name.lua
    printf 'lua_interpreter = "%s"\nvariables = { LUA_INCDIR = "%s", LUA_BINDIR = "%s" }\n' \
      "$interp" "$luainc" "$(dirname "$(command -v "$interp")")" >"$cfg"
  fi
  if ! env ${cfg:+LUAROCKS_CONFIG="$cfg"} luarocks --lua-version "$ver" --tree "$tree" install --deps-mode none \
       "$rock" CURL_INCDIR="$incdir" >>"$log" 2>&1; then
    bad "install $name" "luarocks install"; return
  fi
  paths=$(env ${cfg:+LUAROCKS_CONFIG="$cfg"} luarocks --lua-version "$ver" --tree "$tree" path 2>>"$log") || {
    bad "install $name" "luarocks path"; return; }
  # Outside the checkout, with the tree's paths only (nothing of ours on them).
  if (cd "$work/elsewhere" && eval "$paths" &&
      env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_PATH_5_3 -u LUA_CPATH_5_3 -u LUA_INIT \
        "$interp" "$work/load.lua" "$tree" "$VERSION") >>"$log" 2>&1 &&
     out=$(cd "$work/elsewhere" && eval "$paths" && "$tree/bin/endaoment-journey" --version 2>>"$log") &&
     { [ "$out" = "endaoment-journey $VERSION" ] || { echo "--version printed: $out" >>"$log"; false; }; } &&
     (cd "$work/elsewhere" && eval "$paths" &&
      env -u ENDAOMENT_ENV -u ENDAOMENT_BASE_URL -u ENDAOMENT_API_KEY -u ENDAOMENT_LUA \
        "$tree/bin/endaoment-journey" "$root/examples/plan.json") >"$work/journey.out" 2>&1 &&
     grep -q "journey complete: 6 steps" "$work/journey.out" &&
     { [ -n "$(find "$tree" -path '*endaoment-partner*/docs/README.md' 2>/dev/null)" ] ||
       { echo "the installed rock has no docs/README.md" >>"$log"; false; }; }; then
    ok "install $name (luarocks --lua-version $ver, $interp)"
  else
    [ -f "$work/journey.out" ] && cat "$work/journey.out" >>"$log"
    bad "install $name"
  fi
  rm -f "$work/journey.out"
}

check_interp lua5.1 5.1 lua5.1
check_interp lua5.3 5.3 lua5.3
check_interp lua5.4 5.4 lua5.4
check_interp luajit 5.1 luajit /usr/include/luajit-2.1

# Nothing was built in the checkout.
: >"$log"
stray_after=$(stray)
if [ "$stray_after" = "$stray_before" ]; then
  ok "checkout untouched"
else
  echo "left in the checkout: $stray_after" >"$log"; bad "checkout untouched"
fi

echo "release-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
