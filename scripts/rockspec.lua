-- Writes the rockspec of a release from rockspecs/endaoment-partner-scm-1.rockspec
-- on stdout: the same text, with the version and the source (a git tag, or a
-- local tarball for an offline pack) changed, so the module lists can never
-- drift apart.
--
--   lua5.4 scripts/rockspec.lua 0.1.0 > rockspecs/endaoment-partner-0.1.0-1.rockspec   (make rockspec)
--   lua5.4 scripts/rockspec.lua 0.1.0 --url file:///tmp/x.tar.gz --dir endaoment-partner-0.1.0
--
-- Runs on Lua 5.1-5.4 and LuaJIT.
local version, url, dir, scm
local SCM = "rockspecs/endaoment-partner-scm-1.rockspec"
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--url" then i = i + 1; url = arg[i]
    elseif a == "--dir" then i = i + 1; dir = arg[i]
    elseif a == "--scm" then i = i + 1; scm = arg[i]
    elseif not version then version = a
    else io.stderr:write("rockspec.lua: unexpected argument ", a, "\n"); os.exit(2) end
    i = i + 1
  end
end
if not version or not version:match("^%d+%.%d+%.%d+$") then
  io.stderr:write("usage: lua scripts/rockspec.lua VERSION [--url URL --dir DIR] [--scm FILE]\n")
  os.exit(2)
end
scm = scm or SCM

local f = assert(io.open(scm, "rb"))
local text = f:read("*a")
f:close()

local function replace_once(s, pattern, repl, what)
  local out, n = s:gsub(pattern, repl)
  if n ~= 1 then
    io.stderr:write("rockspec.lua: ", scm, ": expected one ", what, ", found ", n, "\n")
    os.exit(1)
  end
  return out
end

text = replace_once(text, '\nversion = "scm%-1"\n', function()
  return '\nversion = "' .. version .. '-1"\n'
end, 'version = "scm-1" line')

local source
if url then
  source = 'source = {\n  url = "' .. url .. '",\n' .. (dir and ('  dir = "' .. dir .. '",\n') or "") .. "}"
else
  local git = text:match('\nsource = {%s*url = "(git%+[^"]+)",%s*}')
  if not git then
    io.stderr:write("rockspec.lua: ", scm, ": expected source = { url = \"git+...\" }\n")
    os.exit(1)
  end
  source = 'source = {\n  url = "' .. git .. '",\n  tag = "v' .. version .. '",\n}'
end
text = replace_once(text, "\nsource = {.-\n}", function() return "\n" .. source end, "source table")

local header = "-- Generated from " .. scm:match("[^/]*$") .. " by `make rockspec`: edit that file, not this one.\n"
io.write(header, text)
