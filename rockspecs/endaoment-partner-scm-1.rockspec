rockspec_format = "3.0"
package = "endaoment-partner"
version = "scm-1"
source = {
  url = "git+https://github.com/endaoment-partner/endaoment-partner.git",
}
description = {
  summary = "Lua SDK with a C core for Endaoment's tech-platform partner API, plus an offline sandbox",
  detailed = [[
    Provision users, create partner-managed donor-advised funds, record settled donations,
    submit grants and report missing nonprofits through Endaoment's partner API, with
    validation and exactly-once idempotency keys. Ships an offline emulator of the API.
  ]],
  license = "MIT",
  labels = { "endaoment", "donations", "api-client", "sandbox" },
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1",
  "luasocket >= 3.0",
  "argparse >= 0.7",
}
test_dependencies = {
  "busted >= 2.0",
}
test = {
  type = "busted",
}
external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
  UUID = { header = "uuid/uuid.h", library = "uuid" },
}
build = {
  type = "builtin",
  modules = {
    ["endaoment.partner.core"] = {
      sources = { "csrc/core.c", "csrc/core_decode.c", "csrc/core_json.c", "csrc/core_prepare.c", "csrc/core_sha256.c",
        "csrc/core_utf8.c", "csrc/core_validate.c", "csrc/strbuf.c", "csrc/compat.c" },
      defines = { "_POSIX_C_SOURCE=200809L" },
      incdirs = { "csrc", "$(UUID_INCDIR)" },
      libdirs = { "$(UUID_LIBDIR)" },
      libraries = { "uuid" },
    },
    ["endaoment.partner.curl"] = {
      sources = { "csrc/curl.c", "csrc/curl_lua_multi.c", "csrc/curl_multi.c", "csrc/curl_transfer.c",
        "csrc/strbuf.c", "csrc/compat.c" },
      defines = { "_POSIX_C_SOURCE=200809L" },
      incdirs = { "csrc", "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      libraries = { "curl" },
    },
    ["endaoment.partner.fs"] = {
      sources = { "csrc/fs.c", "csrc/compat.c" },
      defines = { "_POSIX_C_SOURCE=200809L" },
      incdirs = { "csrc" },
    },
    ["endaoment.partner"] = "lua/endaoment/partner.lua",
    ["endaoment.partner.retry"] = "lua/endaoment/partner/retry.lua",
    ["endaoment.partner.net"] = "lua/endaoment/partner/net.lua",
    ["endaoment.partner.async"] = "lua/endaoment/partner/async.lua",
    ["endaoment.partner.journey"] = "lua/endaoment/partner/journey.lua",
    ["endaoment.partner.json"] = "lua/endaoment/partner/json.lua",
    ["endaoment.partner.schema"] = "lua/endaoment/partner/schema.lua",
    ["endaoment.partner.store"] = "lua/endaoment/partner/store.lua",
    ["endaoment.partner.store.file"] = "lua/endaoment/partner/store/file.lua",
    ["endaoment.partner.store.sqlite"] = "lua/endaoment/partner/store/sqlite.lua",
    ["endaoment.partner.store.postgres"] = "lua/endaoment/partner/store/postgres.lua",
    ["endaoment.partner.transport.curl"] = "lua/endaoment/partner/transport/curl.lua",
    ["endaoment.partner.transport.ngx"] = "lua/endaoment/partner/transport/ngx.lua",
    ["endaoment.sandbox.ngx"] = "lua/endaoment/sandbox/ngx.lua",
    ["endaoment.sandbox"] = "lua/endaoment/sandbox.lua",
    ["endaoment.sandbox.json"] = "lua/endaoment/sandbox/json.lua",
    ["endaoment.sandbox.rules"] = "lua/endaoment/sandbox/rules.lua",
    ["endaoment.sandbox.faults"] = "lua/endaoment/sandbox/faults.lua",
    ["endaoment.sandbox.server"] = "lua/endaoment/sandbox/server.lua",
    ["endaoment.sandbox.dashboard"] = "lua/endaoment/sandbox/dashboard.lua",
  },
  install = {
    bin = {
      ["endaoment-sandbox"] = "bin/endaoment-sandbox",
      ["endaoment-journey"] = "bin/endaoment-journey",
    },
  },
  copy_directories = { "docs", "examples", "types" },
}
