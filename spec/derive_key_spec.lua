-- SHA-256 and derived idempotency keys in the C core (docs/derived-keys.md).
-- The hash is checked against NIST vectors and the system sha256sum; the key
-- against the recipe as documented, recomputed here and by the doc's Python.
-- Runs on Lua 5.4 and LuaJIT (no bit operators, no \x escapes).
local core = require("endaoment.partner.core")

-- valgrind runs this file ~30x slower: fewer iterations there, same checks.
local SLOW = (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) ~= nil

local NS = "6f0e2b43-5c1a-4d8e-9b7f-3a2d1c0e9f84"
local NS2 = "2b8108d8-30fc-4c62-9b93-07ee1f8b8455"
local DOC = "docs/derived-keys.md"

-- Random inputs differ per run for coverage; the seed is in every failure message to replay one.
local SEED = tonumber(os.getenv("DERIVE_KEY_SEED")) or os.time()
math.randomseed(SEED)

local H = "[0-9a-f]"
local V4 = "^" .. H:rep(8) .. "%-" .. H:rep(4) .. "%-4" .. H:rep(3) .. "%-[89ab]" .. H:rep(3) .. "%-" ..
  H:rep(12) .. "$"

local function random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  assert(f:write(s))
  assert(f:close())
end

local function run(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

local function has_command(name)
  return run("command -v " .. name .. " 2>/dev/null") ~= ""
end

-- sha256sum of each string, in one process so the check stays fast under valgrind.
local function sha256sum_all(inputs)
  local paths = {}
  for i, s in ipairs(inputs) do
    paths[i] = os.tmpname()
    write_file(paths[i], s)
  end
  local out = run("sha256sum " .. table.concat(paths, " "))
  for _, p in ipairs(paths) do os.remove(p) end
  local sums = {}
  for hex in out:gmatch("(%x+)  [^\n]*\n") do sums[#sums + 1] = hex end
  assert.equal(#inputs, #sums, "sha256sum output: " .. out)
  return sums
end

-- The recipe exactly as docs/derived-keys.md states it, with sha256sum as the hash.
local function recipe_key(namespace, op, natural_id)
  local hex = sha256sum_all({ namespace:lower() .. ":" .. op .. ":" .. natural_id })[1]
  local h = {}
  for i = 0, 15 do h[i] = tonumber(hex:sub(2 * i + 1, 2 * i + 2), 16) end
  h[6] = h[6] % 16 + 0x40  -- (h[6] & 0x0f) | 0x40
  h[8] = h[8] % 64 + 0x80  -- (h[8] & 0x3f) | 0x80
  local s = {}
  for i = 0, 15 do s[#s + 1] = string.format("%02x", h[i]) end
  s = table.concat(s)
  return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-" .. s:sub(13, 16) .. "-" .. s:sub(17, 20) .. "-" .. s:sub(21, 32)
end

local function doc_text() return read_file(DOC) end

describe("core.sha256_hex", function()
  it("matches the NIST FIPS 180-4 example vectors", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256_hex(""))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256_hex("abc"))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      core.sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.equal("cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
      core.sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn" ..
        "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"))
  end)

  it("hashes one million 'a'", function()
    assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      core.sha256_hex(string.rep("a", 1000000)))
  end)

  it("pads correctly at every block boundary (55, 56, 63, 64, 65 bytes and one block later)", function()
    local expect = {
      [55] = "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318",
      [56] = "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a",
      [63] = "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34",
      [64] = "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb",
      [65] = "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0",
      [119] = "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb",
      [120] = "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c",
      [127] = "c57e9278af78fa3cab38667bef4ce29d783787a2f731d4e12200270f0c32320a",
      [128] = "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e",
    }
    for n, hex in pairs(expect) do
      assert.equal(hex, core.sha256_hex(string.rep("a", n)), "length " .. n)
    end
  end)

  it("agrees with sha256sum on 200 random-length random-byte inputs", function()
    assert.is_true(has_command("sha256sum"), "sha256sum (coreutils) is required for this test")
    local inputs = {}
    for i = 1, 200 do
      -- mostly around one to three blocks, where padding bugs live; some longer
      local n = (i % 10 == 0) and math.random(0, 5000) or math.random(0, 200)
      inputs[i] = random_bytes(n)
    end
    local sums = sha256sum_all(inputs)
    for i, s in ipairs(inputs) do
      assert.equal(sums[i], core.sha256_hex(s), "input " .. i .. " (" .. #s .. " bytes), seed " .. SEED)
    end
  end)

  it("keeps NUL and high bytes", function()
    local s = string.char(0, 255, 0, 128) .. "x"
    assert.equal(sha256sum_all({ s })[1], core.sha256_hex(s))
    assert.are_not.equal(core.sha256_hex("a"), core.sha256_hex("a" .. string.char(0)))
  end)

  it("raises on a non-string", function()
    assert.has_error(function() core.sha256_hex(nil) end)
    assert.has_error(function() core.sha256_hex(12) end)
    assert.has_error(function() core.sha256_hex({}) end)
  end)
end)

describe("core.derive_key", function()
  it("exposes the default namespace", function()
    assert.equal(NS, core.DEFAULT_KEY_NAMESPACE)
    assert.is_true(core.is_uuid(core.DEFAULT_KEY_NAMESPACE))
  end)

  it("is deterministic", function()
    local a = core.derive_key(NS, "record_cash_donation", "ledger-42")
    for _ = 1, 5 do
      assert.equal(a, core.derive_key(NS, "record_cash_donation", "ledger-42"))
    end
    assert.equal("169245aa-c9b6-4763-839d-b279ddbf38de", a)
  end)

  it("gives strict, distinct RFC 4122 version-4 UUIDs", function()
    local n = SLOW and 2000 or 10000
    local seen = {}
    local ops = { "record_cash_donation", "record_stock_donation", "submit_grant", "report_missing_org" }
    for i = 1, n do
      -- the index keeps natural ids distinct, so a repeat can only come from the hash or the masking
      local nat = (i % 3 == 0) and (i .. ":" .. random_bytes(math.random(0, 40)):gsub("%z", "0")) or ("ledger-" .. i)
      local k = core.derive_key(NS, ops[i % #ops + 1], nat)
      assert.is_truthy(k:match(V4), k)
      assert.is_nil(seen[k], "duplicate key " .. k .. ", seed " .. SEED)
      seen[k] = true
    end
  end)

  it("changes with the op, the natural id and the namespace", function()
    local base = core.derive_key(NS, "record_cash_donation", "ledger-42")
    assert.are_not.equal(base, core.derive_key(NS, "record_stock_donation", "ledger-42"))
    assert.are_not.equal(base, core.derive_key(NS, "record_cash_donation", "ledger-43"))
    assert.are_not.equal(base, core.derive_key(NS, "record_cash_donation", "ledger-42 "))
    assert.are_not.equal(base, core.derive_key(NS2, "record_cash_donation", "ledger-42"))
    -- the separators keep op and natural id apart: moving a ':' between them changes the key
    assert.are_not.equal(core.derive_key(NS, "a", "b:c"), core.derive_key(NS, "a_b", "c"))
  end)

  it("treats the namespace case-insensitively", function()
    assert.equal(core.derive_key(NS, "submit_grant", "T-1"), core.derive_key(NS:upper(), "submit_grant", "T-1"))
    local mixed = NS:gsub("[a-f]", function(c) return math.random(2) == 1 and c:upper() or c end)
    assert.equal(core.derive_key(NS, "submit_grant", "T-1"), core.derive_key(mixed, "submit_grant", "T-1"))
  end)

  it("accepts natural ids up to 1024 bytes, any bytes but NUL", function()
    local k = core.derive_key(NS, "report_missing_org", string.rep("9", 1024))
    assert.is_truthy(k:match(V4))
    local utf8 = "don" .. string.char(0xC3, 0xA9) .. "-" .. string.char(0xE2, 0x82, 0xAC)
    assert.equal(recipe_key(NS, "record_cash_donation", utf8), core.derive_key(NS, "record_cash_donation", utf8))
  end)

  it("raises on bad arguments", function()
    local function raises(pattern, ...)
      local args = { ... }
      local ok, err = pcall(core.derive_key, args[1], args[2], args[3])
      assert.is_false(ok, "no error for " .. pattern)
      assert.is_truthy(tostring(err):find(pattern, 1, true), tostring(err))
    end
    raises("#1", "not-a-uuid", "op", "x")
    raises("#1", NS .. " ", "op", "x")
    raises("#1", "{" .. NS .. "}", "op", "x")
    raises("#1", nil, "op", "x")
    raises("#1", 42, "op", "x")
    raises("#2", NS, "", "x")
    raises("#2", NS, "Record_cash_donation", "x")
    raises("#2", NS, "record-cash-donation", "x")
    raises("#2", NS, "op:x", "x")
    raises("#2", NS, nil, "x")
    raises("#3", NS, "op", "")
    raises("#3", NS, "op", string.rep("9", 1025))
    raises("#3", NS, "op", "a" .. string.char(0) .. "b")
    raises("#3", NS, "op", nil)
    raises("#3", NS, "op", 42)
  end)
end)

describe("docs/derived-keys.md", function()
  local EXAMPLE_OP, EXAMPLE_ID = "record_cash_donation", "ledger-42"

  local function doc_example_key()
    local key = doc_text():match("the key is:%s*```%s*(%S+)%s*```")
    assert.is_string(key, "no example key block in " .. DOC)
    return key
  end

  it("states the default namespace the module has", function()
    assert.is_truthy(doc_text():find("**`" .. core.DEFAULT_KEY_NAMESPACE .. "`**", 1, true))
  end)

  it("gives the example key the code derives, and the recipe (via sha256sum) agrees", function()
    assert.is_true(has_command("sha256sum"), "sha256sum (coreutils) is required for this test")
    local key = doc_example_key()
    assert.equal(core.derive_key(NS, EXAMPLE_OP, EXAMPLE_ID), key)
    assert.equal(recipe_key(NS, EXAMPLE_OP, EXAMPLE_ID), key)
    -- and on inputs where the masks change both bytes, and an upper-case namespace
    for i = 1, 20 do
      local nat = "row-" .. i .. "-" .. math.random(1, 1000000)
      assert.equal(recipe_key(NS2:upper(), "submit_grant", nat), core.derive_key(NS2:upper(), "submit_grant", nat),
        nat .. ", seed " .. SEED)
    end
  end)

  it("has a Python snippet that prints the same key", function()
    -- Not a skip: CI and developer machines have python3, and a missing one must be noticed.
    assert.is_true(has_command("python3"),
      "python3 not found: this test must run the doc's Python snippet, so it fails rather than skips")
    local code = doc_text():match("```python\n(.-)\n```")
    assert.is_string(code, "no ```python block in " .. DOC)
    local path = os.tmpname()
    write_file(path, code .. "\n")
    local out = run("python3 " .. path .. " 2>&1")
    os.remove(path)
    assert.equal(core.derive_key(NS, EXAMPLE_OP, EXAMPLE_ID) .. "\n", out)
    assert.equal(doc_example_key() .. "\n", out)
  end)
end)

describe("core.derive_natural", function()
  local function walk(body, path)
    local v = body
    for _, k in ipairs(path) do
      if type(v) ~= "table" then return nil end
      v = rawget(v, k)
    end
    if type(v) ~= "string" or v == "" or #v > 1024 or v:find("%z") then return nil end
    return v
  end
  local GRANT = { "inboundCustodianTransfer", "partnerFundingTransferId" }
  local CASH = { "partnerOperationId" }
  local hidden = setmetatable({}, { __index = function() return "from-index" end })
  local cases = {
    { CASH, { partnerOperationId = "ledger-42" } },
    { CASH, { partnerOperationId = "" } },
    { CASH, { partnerOperationId = 42 } },
    { CASH, { partnerOperationId = string.rep("n", 1024) } },
    { CASH, { partnerOperationId = string.rep("n", 1025) } },
    { CASH, { partnerOperationId = "nul\0id" } },
    { CASH, {} },
    { CASH, "not a table" },
    { CASH, hidden },
    { GRANT, { inboundCustodianTransfer = { partnerFundingTransferId = "journal-1" } } },
    { GRANT, { inboundCustodianTransfer = "journal-1" } },
    { GRANT, { inboundCustodianTransfer = hidden } },
    { GRANT, { partnerFundingTransferId = "journal-1" } },
  }

  it("gives the key derive_key gives for the id at the path, and that id; nothing when it is not usable", function()
    for i, c in ipairs(cases) do
      local path, body = c[1], c[2]
      local want = walk(body, path)
      local key, nid = core.derive_natural(NS, "submit_grant", body, path[1], path[2])
      if want then
        assert.equal(core.derive_key(NS, "submit_grant", want), key, "case " .. i)
        assert.equal(want, nid, "case " .. i)
      else
        assert.is_nil(key, "case " .. i)
        assert.is_nil(nid, "case " .. i)
      end
    end
  end)

  it("raises on a bad namespace, op or path, as derive_key does", function()
    local body = { partnerOperationId = "ledger-42" }
    assert.has_error(function() core.derive_natural("nope", "op", body, "partnerOperationId") end)
    assert.has_error(function() core.derive_natural(NS, "Bad-Op", body, "partnerOperationId") end)
    assert.has_error(function() core.derive_natural(NS, "op", body) end)
    assert.has_error(function() core.derive_natural(NS, "op", body, 1) end)
  end)
end)

describe("SHA-256 on the x86 SHA extensions", function()
  -- Every length from 0 to 300 (one to six blocks, each padding edge) and a
  -- set of derived keys, as text: run here and in a process made to keep
  -- the portable C version; the two must be the same, byte for byte.
  local CODE = [[
    local core = require "endaoment.partner.core"
    local out = { core.sha256_impl }
    for n = 0, 300 do
      local t = {}
      for i = 1, n do t[i] = string.char((i * 7 + n) % 256) end
      out[#out + 1] = core.sha256_hex(table.concat(t))
    end
    for i = 1, 50 do
      out[#out + 1] = core.derive_key(core.DEFAULT_KEY_NAMESPACE, "submit_grant", "journal-" .. string.rep("x", i))
    end
    return table.concat(out, "\n")
  ]]

  it("gives the portable C version's hashes and keys, and is used where the CPU has it", function()
    local here = assert((loadstring or load)(CODE))()
    local interp = type(jit) == "table" and "luajit" or "lua5.4"
    local f = assert(io.popen("EPARTNER_SHA256=portable " .. interp .. " -e 'io.write((load or loadstring)(" ..
      string.format("%q", CODE):gsub("\\\n", "\\n"):gsub("'", "'\\''") .. ")())' 2>&1"))
    local there = f:read("*a")
    f:close()
    local impl_here, rest_here = here:match("^([^\n]*)\n(.*)$")
    local impl_there, rest_there = there:match("^([^\n]*)\n(.*)$")
    assert.equal("portable", impl_there, there:sub(1, 200))
    assert.equal(rest_there, rest_here)
    -- The extensions are used where the CPU has them (valgrind's CPU has none).
    local flags = read_file("/proc/cpuinfo")
    if flags:find("%f[%w]sha_ni%f[%W]") and not SLOW then
      assert.equal("sha-ni", impl_here)
    end
  end)
end)
