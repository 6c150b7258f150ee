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
}
test_dependencies = {
  "busted >= 2.0",
}
test = {
  type = "busted",
}
build = {
  type = "builtin",
  modules = {
    ["endaoment.sandbox"] = "lua/endaoment/sandbox.lua",
    ["endaoment.sandbox.json"] = "lua/endaoment/sandbox/json.lua",
    ["endaoment.sandbox.rules"] = "lua/endaoment/sandbox/rules.lua",
  },
  install = {
    bin = {
      ["endaoment-sandbox"] = "bin/endaoment-sandbox",
    },
  },
  copy_directories = { "docs", "examples" },
}
