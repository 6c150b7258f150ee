std = "max"
max_line_length = 120
include_files = { "lua/**/*.lua", "bin/*", "spec/**/*.lua", "examples/**/*.lua", "bench/**/*.lua", "types/**/*.lua" }
files["spec"] = { std = "+busted" }
files["bin"] = { globals = {} }
-- ngx is provided by OpenResty in the modules that run under nginx.
files["lua/endaoment/partner/transport/ngx.lua"] = { read_globals = { "ngx" } }
-- Handlers assign ngx.status and ngx.header, which luacheck marks read-only.
files["examples/openresty"] = { globals = { "ngx" } }
-- Definition files for lua-language-server: empty function bodies, long annotation lines.
files["types"] = { unused_args = false, unused = false, max_line_length = false }
