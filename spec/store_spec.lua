-- endaoment.partner.store: the journey stores (file:, sqlite:, postgres://).
-- The same conformance cases run against all three; claims are checked
-- against real second processes (the interpreter and build of this run),
-- killed with SIGKILL to show the system releases what they held. The
-- PostgreSQL cases run against a throwaway cluster this spec starts
-- (spec/helpers/postgres.lua): if it cannot start, the suite fails.
local stores = require "endaoment.partner.store"
local socket = require "socket"
local pghelper = require "spec.helpers.postgres"

local INTERP = (rawget(_G, "jit") and "luajit")
  or ({ ["Lua 5.1"] = "lua5.1", ["Lua 5.3"] = "lua5.3", ["Lua 5.4"] = "lua5.4" })[_VERSION]

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

local function mkdtemp()
  local dir = sh("mktemp -d /tmp/epartner-store.XXXXXX"):gsub("%s+$", "")
  assert(dir:match("^/tmp/epartner%-store%."), dir)
  return dir
end

local function now() return socket.gettime() end

-- A child process running code (with this run's module paths); its first
-- output line is read by the caller. kill() is idempotent and waits.
local function spawn(code, stdin)
  code = string.format("package.path = %q; package.cpath = %q\n", package.path, package.cpath) .. code
  local pipe = assert(io.popen("echo $$; exec " .. INTERP .. " -e " .. q(code) ..
    (stdin and (" < " .. q(stdin)) or "") .. " 2>&1", "r"))
  local p = { pid = tonumber(pipe:read("*l")), pipe = pipe }
  function p.line() return pipe:read("*l") end
  function p.rest() return pipe:read("*a") end
  function p.kill(sig)
    if p.closed then return end
    p.closed = true
    os.execute("kill -" .. (sig or "KILL") .. " " .. p.pid .. " 2>/dev/null")
    pipe:close()
  end
  function p.wait()
    if p.closed then return end
    p.closed = true
    pipe:close()
  end
  return p
end

-- A child that claims journey_id in spec and holds it until killed (30 s at most).
local function holder(spec, journey_id)
  return spawn(string.format([[
    local stores = require "endaoment.partner.store"
    local s, e = stores.open(%q)
    if not s then print("failed " .. tostring(e)) os.exit(1) end
    local c, ce = s:claim(%q)
    io.stdout:write(c and "claimed\n" or ("failed " .. tostring(ce) .. "\n"))
    io.stdout:flush()
    if c then require("socket").sleep(30) end
  ]], spec, journey_id))
end

-- Polls store:claim(id) until it succeeds or seconds pass.
local function claim_within(store, id, seconds)
  local deadline = now() + seconds
  repeat
    local c, e = store:claim(id)
    if c then return c end
    if e.kind ~= "busy" then return nil, e end
    socket.sleep(0.05)
  until now() > deadline
  return store:claim(id)
end

local INFO = { status = "running", base_url = "http://127.0.0.1:8787" }

-- Documents that must come back byte for byte.
local function documents()
  local big = { '{"steps":[' }
  for i = 1, 2000 do
    big[#big + 1] = string.format('{"id":"donations[%d]","key":"%08d-aaaa-4bbb-8ccc-dddddddddddd",' ..
      '"memo":"Grant \\u00e9t\\u00e9 — café ☕ 𝄞 \'quoted\' \\"esc\\" back\\\\slash"},', i, i)
  end
  big[#big + 1] = '{}]}'
  big = table.concat(big)
  local unicode = string.rep("é☕𝄞日本語", 2000)  -- multi-byte characters across every chunk boundary
  return {
    '{}',
    '{"a":"it\'s","b":"\'\'","c":"\\\\","d":"\\"","e":"$$ $tag$ E\'x\' %s %q ?","f":"\\n\\t"}',
    '{"name":"Zoë Łukasiewicz","emoji":"😀","cjk":"基金","rtl":"مرحبا"}',
    "  leading and trailing spaces, a newline\nand a tab\t  ",
    big,
    '{"u":"' .. unicode .. '"}',
  }
end

---------------------------------------------------------------------------
-- the three stores
---------------------------------------------------------------------------

local pg -- the throwaway cluster, started once for this file by the first describe that needs it
local pg_failed
local function need_pg()
  if pg then return pg end
  if pg_failed then error(pg_failed, 0) end
  local ok, res = pcall(pghelper.start) -- raises (those cases fail) if PostgreSQL cannot start
  if not ok then
    pg_failed = "PostgreSQL did not start, so the postgres cases fail: " .. tostring(res)
    error(pg_failed, 0)
  end
  pg = res
  return pg
end

local KINDS = {
  { name = "file", multi = false,
    spec = function(dir, which) return "file:" .. dir .. "/" .. (which or "j") .. ".json" end },
  { name = "sqlite", multi = true, spec = function(dir) return "sqlite:" .. dir .. "/journeys.db" end },
  { name = "postgres", multi = true, spec = function() return pg.url end },
}

local seq = 0
-- A journey id no earlier case used (the postgres database is shared by all cases).
local function fresh_id(tag)
  seq = seq + 1
  return "user:" .. (tag or "j") .. "-" .. seq .. "-" .. tostring(math.floor(now() * 1000))
end

describe("journey stores", function()
  teardown(function()
    if pg then pg.stop() end
  end)

  for _, kind in ipairs(KINDS) do
    describe(kind.name, function()
      local dir, spec, store, children
      if kind.name == "postgres" then setup(need_pg) end
      before_each(function()
        dir = mkdtemp()
        spec = kind.spec(dir)
        children = {}
        local err
        store, err = stores.open(spec)
        assert(store, tostring(err))
      end)
      after_each(function()
        for _, c in ipairs(children) do c.kill() end
        if store then store:close() end
        os.execute("rm -rf " .. q(dir))
      end)

      it("opens with a printable name and multi, and closes idempotently", function()
        assert.equal(kind.multi, store.multi)
        assert.equal("string", type(store.name))
        if kind.name ~= "postgres" then assert.equal(spec, store.name) end
        assert.is_true(store:close())
        assert.is_true(store:close())
        local c, err = store:claim(fresh_id())
        assert.is_nil(c)
        assert.equal("config", err.kind)
        assert.matches("closed", err.message)
      end)

      it("claims, loads false before any save, saves, loads the document back", function()
        local id = fresh_id()
        local c = assert(store:claim(id))
        assert.equal(id, c.journey_id)
        assert.is_false(store:load(c))
        assert.is_true(store:save(c, '{"v":1}', INFO))
        assert.equal('{"v":1}', store:load(c))
        assert.is_true(store:save(c, '{"v":2}', { status = "done", base_url = INFO.base_url }))
        assert.equal('{"v":2}', store:load(c))
        store:release(c)
        -- another store of the same spec sees it
        local other = assert(stores.open(spec))
        local c2 = assert(other:claim(id))
        assert.equal('{"v":2}', other:load(c2))
        other:close()
      end)

      it("round-trips documents exactly: quotes, unicode, 100 KB", function()
        local docs = documents()
        assert.is_true(#docs[5] > 100 * 1024)
        for i, doc in ipairs(docs) do
          local c = assert(store:claim(fresh_id("doc" .. i)))
          local ok, err = store:save(c, doc, INFO)
          assert(ok, tostring(err))
          local back = store:load(c)
          assert.equal(#doc, #back)
          assert.is_true(doc == back, "document " .. i .. " changed")
          store:release(c)
          -- and through a fresh connection / reader
          local other = assert(stores.open(spec))
          local c2 = assert(other:claim(c.journey_id))
          assert.is_true(doc == other:load(c2), "document " .. i .. " changed on reopen")
          other:close()
        end
      end)

      it("save_many saves every document, in one call", function()
        if not kind.multi then
          local c = assert(store:claim(fresh_id()))
          assert.is_true(store:save_many({ { c, '{"one":1}', INFO } }))
          assert.equal('{"one":1}', store:load(c))
          assert.is_true(store:save_many({}))
          return
        end
        local claims, list = {}, {}
        for i = 1, 32 do
          claims[i] = assert(store:claim(fresh_id("many")))
          list[i] = { claims[i], '{"n":' .. i .. '}', { status = i % 2 == 0 and "done" or "running",
            base_url = INFO.base_url } }
        end
        assert.is_true(store:save_many(list))
        for i = 1, 32 do assert.equal('{"n":' .. i .. '}', store:load(claims[i])) end
        -- named fields are accepted too
        assert.is_true(store:save_many({ { claim = claims[1], text = "{}", info = INFO } }))
        assert.equal("{}", store:load(claims[1]))
      end)

      it("peek_done reads the finished documents of many journeys at once, without a claim", function()
        if not kind.multi then return end
        local ids, list = {}, {}
        for i = 1, 20 do
          ids[i] = fresh_id("peek")
          local c = assert(store:claim(ids[i]))
          list[i] = { c, '{"n":' .. i .. '}', { status = i % 3 == 0 and "running" or "done",
            base_url = INFO.base_url, durable = i % 2 == 0 } }
        end
        assert.is_true(store:save_many(list))
        ids[#ids + 1] = fresh_id("never-saved")
        local other = assert(stores.open(spec)) -- another worker: holds no claim on them
        local docs = assert(other:peek_done(ids))
        local n = 0
        for id, text in pairs(docs) do
          n = n + 1
          local i = assert(tonumber(text:match('"n":(%d+)')), id)
          assert.equal(ids[i], id)
          assert.is_true(i % 3 ~= 0, "a running journey came back as done: " .. id)
        end
        assert.equal(14, n) -- 20 saved, 6 of them running, 1 never saved
        assert.same({}, assert(other:peek_done({})))
        local none, err = other:peek_done({ "" })
        assert.is_nil(none)
        assert.equal("config", err.kind)
        other:close()
        local closed = store:peek_done(ids)
        assert.is_table(closed) -- still open
        store:close()
        local cerr
        closed, cerr = store:peek_done(ids)
        assert.is_nil(closed)
        assert.matches("closed", cerr.message)
      end)

      it("saves with info.durable = false are saved all the same; a non-boolean durable is refused", function()
        local id = fresh_id()
        local c = assert(store:claim(id))
        assert.is_true(store:save(c, '{"lazy":1}', { status = "done", base_url = INFO.base_url, durable = false }))
        assert.is_true(store:save_many({ { c, '{"lazy":2}', { status = "done", durable = false } } }))
        store:release(c)
        store:close()
        local again = assert(stores.open(spec))
        local c2 = assert(again:claim(id))
        assert.equal('{"lazy":2}', again:load(c2))
        local ok, err = again:save(c2, "{}", { status = "done", durable = "no" })
        assert.is_nil(ok)
        assert.equal("config", err.kind)
        assert.matches("durable must be a boolean", err.message)
        again:close()
      end)

      it("save_many writes nothing when one item is refused", function()
        local a = assert(store:claim(fresh_id("a")))
        assert.is_true(store:save(a, '{"old":true}', INFO))
        local b
        if kind.multi then
          b = assert(store:claim(fresh_id("b")))
          store:release(b) -- a released claim: refused
        else
          b = { journey_id = "forged" } -- not a claim at all
        end
        local ok, err = store:save_many({ { a, '{"new":true}', INFO }, { b, '{"x":1}', INFO } })
        assert.is_nil(ok)
        assert.equal("config", err.kind)
        assert.equal('{"old":true}', store:load(a))
        ok, err = store:save_many({ { a, '{"new":true}', INFO }, { a, '{"x":1}', { status = "sent" } } })
        assert.is_nil(ok)
        assert.equal("config", err.kind)
        assert.matches("status", err.message)
        assert.equal('{"old":true}', store:load(a))
      end)

      it("refuses a bad journey id, document or info as config errors", function()
        for _, id in ipairs({ "", 42, "a\0b", "bad \255 utf8", string.rep("x", 513) }) do
          local c, err = store:claim(id)
          assert.is_nil(c)
          assert.equal("config", err.kind)
        end
        local c = assert(store:claim(fresh_id()))
        local ok, err = store:save(c, { not_a = "string" }, INFO)
        assert.is_nil(ok)
        assert.equal("config", err.kind)
        ok, err = store:save(c, "{}", { status = "paused" })
        assert.is_nil(ok)
        assert.equal("config", err.kind)
        ok, err = store:save(c, "{}")
        assert.is_nil(ok)
        assert.equal("config", err.kind)
        assert.is_false(store:load(c))
      end)

      it("release is idempotent, and a released claim refuses load and save", function()
        local c = assert(store:claim(fresh_id()))
        assert.is_true(store:save(c, "{}", INFO))
        assert.is_true(store:release(c))
        assert.is_true(store:release(c))
        local text, err = store:load(c)
        assert.is_nil(text)
        assert.equal("config", err.kind)
        local ok, err2 = store:save(c, '{"late":1}', INFO)
        assert.is_nil(ok)
        assert.equal("config", err2.kind)
        assert.matches("claim the journey again", err2.message)
        local again = assert(store:claim(c.journey_id))
        assert.equal("{}", store:load(again))
      end)

      it("is busy for a second claim in the same process, through this store or another", function()
        local id = fresh_id()
        local c = assert(store:claim(id))
        local c2, err = store:claim(id)
        assert.is_nil(c2)
        assert.equal("busy", err.kind)
        assert.matches("already claimed", err.message)
        assert.matches("busy", tostring(err))
        local other = assert(stores.open(spec))
        local c3, err3 = other:claim(id)
        assert.is_nil(c3)
        assert.equal("busy", err3.kind)
        local c5, err5 = other:claim(id, { quiet = true })
        assert.is_nil(c5)
        assert.equal("busy", err5.kind)
        if kind.name == "postgres" then
          -- who holds it costs a pg_locks scan: only said when asked
          assert.matches("postgres backend pid", err3.message)
          assert.not_matches("backend pid", err5.message)
        end
        -- a claim of one store is no claim of another
        local text, lerr = other:load(c)
        assert.is_nil(text)
        assert.equal("config", lerr.kind)
        if kind.multi then
          assert(other:claim(fresh_id())) -- other journeys are free
        else
          local c4, err4 = store:claim(fresh_id()) -- one journey per file at a time
          assert.is_nil(c4)
          assert.equal("busy", err4.kind)
        end
        other:close()
        store:release(c)
        local d = assert(store:claim(kind.multi and id or fresh_id()))
        store:release(d)
      end)

      it("close releases every claim it holds", function()
        local ids = { fresh_id() }
        if kind.multi then ids[2] = fresh_id() end
        for _, id in ipairs(ids) do assert(store:claim(id)) end
        local other = assert(stores.open(spec))
        for _, id in ipairs(ids) do assert.equal("busy", select(2, other:claim(id)).kind) end
        assert.is_true(store:close())
        for _, id in ipairs(ids) do
          local c = assert(other:claim(id))
          other:release(c)
        end
        other:close()
        -- and another process can claim them too
        for _, id in ipairs(ids) do
          local h = holder(spec, id)
          children[#children + 1] = h
          assert.equal("claimed", h.line())
          h.kill()
        end
      end)

      it("is exclusive across processes, and a SIGKILLed holder releases its claim", function()
        local x, y = fresh_id("x"), fresh_id("y")
        local h = holder(spec, x)
        children[#children + 1] = h
        assert.equal("claimed", h.line())
        local c, err = store:claim(x)
        assert.is_nil(c)
        assert.equal("busy", err.kind)
        assert.matches(tostring(h.pid), err.message, 1, true) -- says who holds it
        -- another journey is free (file: another file)
        local ystore = kind.multi and store or assert(stores.open(kind.spec(dir, "y")))
        local cy = assert(ystore:claim(y))
        ystore:release(cy)
        if ystore ~= store then ystore:close() end
        h.kill("KILL")
        local t0 = now()
        local cx, e2 = claim_within(store, x, 5)
        assert(cx, tostring(e2))
        assert.is_true(now() - t0 < 5)
        assert.is_true(store:save(cx, '{"after":"kill"}', INFO))
      end)
    end)
  end

  ---------------------------------------------------------------------------
  -- sqlite: many writers
  ---------------------------------------------------------------------------

  describe("sqlite with two processes writing at once", function()
    local dir
    before_each(function() dir = mkdtemp() end)
    after_each(function() os.execute("rm -rf " .. q(dir)) end)

    it("loses nothing (2 processes x 200 saves)", function()
      local spec = "sqlite:" .. dir .. "/journeys.db"
      local N = 200
      local code = [[
        local stores = require "endaoment.partner.store"
        local s = assert(stores.open(%q))
        io.stdout:write("ready\n") io.stdout:flush()
        io.stdin:read("*l") -- start together
        for i = 1, %d do
          local id = %q .. i
          local c = assert(s:claim(id))
          local ok, e = s:save(c, '{"writer":' .. %q .. ',"i":' .. i .. '}', { status = "running", base_url = "b" })
          if not ok then print("failed " .. tostring(e)) os.exit(1) end
          if i %% 20 == 0 then
            ok, e = s:save(c, '{"writer":' .. %q .. ',"i":' .. i .. ',"again":true}', { status = "done" })
            if not ok then print("failed " .. tostring(e)) os.exit(1) end
          end
          s:release(c)
        end
        s:close()
        print("done")
      ]]
      -- a fifo per child so both start writing at the same moment
      local kids, writers = {}, {}
      finally(function()
        for k = 1, 2 do if kids[k] then kids[k].kill() end end
      end)
      for k = 1, 2 do
        local fifo = dir .. "/go" .. k
        os.execute("mkfifo " .. q(fifo))
        -- the shell opens the fifo for reading before the interpreter starts: open its writer first
        kids[k] = spawn(string.format(code, spec, N, "w" .. k .. ":", "w" .. k, "w" .. k), fifo)
        writers[k] = assert(io.open(fifo, "w"))
      end
      for k = 1, 2 do assert.equal("ready", kids[k].line()) end
      local t0 = now()
      for k = 1, 2 do writers[k]:write("go\n"); writers[k]:close() end
      for k = 1, 2 do
        local out = kids[k].rest()
        kids[k].wait()
        assert.equal("done", (out:gsub("%s+$", "")))
      end
      assert.is_true(now() - t0 < 40)
      local s = assert(stores.open(spec))
      for k = 1, 2 do
        for i = 1, N do
          local c = assert(s:claim("w" .. k .. ":" .. i))
          local want = '{"writer":w' .. k .. ',"i":' .. i .. (i % 20 == 0 and ',"again":true}' or '}')
          assert.equal(want, s:load(c))
          s:release(c)
        end
      end
      s:close()
    end)

    it("rolls back the whole save_many when the database refuses one row", function()
      local spec = "sqlite:" .. dir .. "/journeys.db"
      local s = assert(stores.open(spec))
      local env = require("luasql.sqlite3").sqlite3()
      local conn = assert(env:connect(dir .. "/journeys.db"))
      for _, ev in ipairs({ "INSERT", "UPDATE" }) do
        assert(conn:execute("CREATE TRIGGER refuse_" .. ev .. " BEFORE " .. ev .. " ON endaoment_journeys " ..
          "WHEN NEW.state = 'refuse me' BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"))
      end
      conn:close()
      env:close()
      local a, b = assert(s:claim("a")), assert(s:claim("b"))
      assert.is_true(s:save(a, "old a", INFO))
      local ok, err = s:save_many({ { a, "new a", INFO }, { b, "refuse me", INFO } })
      assert.is_nil(ok)
      assert.equal("config", err.kind)
      assert.matches("none was saved", err.message)
      assert.matches("refused by trigger", err.message)
      assert.equal("old a", s:load(a))
      assert.is_false(s:load(b))
      -- the store still works afterwards
      assert.is_true(s:save_many({ { a, "new a", INFO }, { b, "new b", INFO } }))
      assert.equal("new b", s:load(b))
      s:close()
    end)

    it("refuses a database it cannot open, an in-memory database and a NUL in a document", function()
      local s, err = stores.open("sqlite:" .. dir .. "/missing/dir/j.db")
      assert.is_nil(s)
      assert.equal("config", err.kind)
      assert.equal("store", err.field)
      assert.matches("sqlite:" .. dir .. "/missing/dir/j.db", err.message, 1, true)
      s, err = stores.open("sqlite::memory:")
      assert.is_nil(s)
      assert.equal("config", err.kind)
      s, err = stores.open("sqlite:")
      assert.is_nil(s)
      assert.equal("config", err.kind)
      s = assert(stores.open("sqlite:" .. dir .. "/j.db"))
      local c = assert(s:claim("nul"))
      local ok
      ok, err = s:save(c, "a\0b", INFO)
      assert.is_nil(ok)
      assert.equal("config", err.kind)
      assert.matches("NUL", err.message)
      s:close()
      -- the file store keeps any bytes
      local f = assert(stores.open("file:" .. dir .. "/f.json"))
      local fc = assert(f:claim("nul"))
      assert.is_true(f:save(fc, "a\0b", INFO))
      assert.equal("a\0b", f:load(fc))
      f:close()
    end)
  end)

  ---------------------------------------------------------------------------
  -- file: reading
  ---------------------------------------------------------------------------

  describe("file", function()
    it("never takes an unreadable state file for an empty one", function()
      local dir = mkdtemp()
      finally(function() os.execute("rm -rf " .. q(dir)) end)
      os.execute("mkdir " .. q(dir .. "/j.json")) -- a directory where the file should be
      local s = assert(stores.open("file:" .. dir .. "/j.json"))
      local c = assert(s:claim("x"))
      local text, err = s:load(c)
      assert.is_nil(text)
      assert.equal("config", err.kind)
      assert.matches("cannot read", err.message)
      s:close()
      local bad = assert(stores.open("file:" .. dir .. "/missing/j.json"))
      local c2, err2 = bad:claim("x")
      assert.is_nil(c2)
      assert.equal("config", err2.kind)
      assert.matches("No such file or directory", err2.message)
    end)
  end)

  ---------------------------------------------------------------------------
  -- postgres: specifics
  ---------------------------------------------------------------------------

  describe("postgres", function()
    setup(need_pg)

    it("names an unreachable database, never its password", function()
      local port = pghelper.free_port() -- closed: nothing listens there
      local url = "postgres://user:s3cret-pw@127.0.0.1:" .. port .. "/db"
      local t0 = now()
      local s, err = stores.open(url)
      assert.is_true(now() - t0 < 15)
      assert.is_nil(s)
      assert.equal("config", err.kind)
      assert.equal("store", err.field)
      assert.matches("postgres://user:***@127.0.0.1:" .. port .. "/db", err.message, 1, true)
      assert.is_nil(err.message:find("s3cret-pw", 1, true))
      assert.is_nil(tostring(err):find("s3cret-pw", 1, true))
      assert.matches("check that the server is running", err.message)
    end)

    it("keeps passwords out of every message, however the URL is malformed", function()
      local port = pg.port
      for _, url in ipairs({
        "postgresql://user:s3cret-pw@127.0.0.1:" .. port .. "/no_such_db",
        "postgres://nobody:s3cret-pw@127.0.0.1:" .. port .. "/epartner",
        "postgres://user:s3cret%2Dpw@127.0.0.1:" .. port .. "/db",            -- percent-encoded
        "postgres://user:s3cret/pw@127.0.0.1:" .. port .. "/db",              -- a raw "/"
        "postgres://user:s3cret@pw@127.0.0.1:" .. port .. "/db",              -- a raw "@"
        "postgres://user:s3cret%zzpw@127.0.0.1:" .. port .. "/db",            -- bad percent-encoding
        "postgres://127.0.0.1:" .. port .. "/db?user=u&password=s3cret-pw",   -- in the query
        "postgres://user:s3cret-pw@[::1:" .. port .. "/db",                   -- libpq echoes the whole URL
        "postgres://user:s3cret-pw@127.0.0.1:" .. port .. "/db?bogus=1",
      }) do
        local s, err = stores.open(url)
        assert.is_nil(s, url)
        assert.equal("config", err.kind)
        for _, text in ipairs({ err.message, tostring(err) }) do
          assert.is_nil(text:find("s3cret", 1, true), text)
          assert.is_nil(text:find("pw@", 1, true), text)
          assert.is_nil(text:find("-pw", 1, true), text)
        end
        assert.matches("store postgres", err.message)
      end
    end)

    it("names the store with the password redacted", function()
      local name = require("endaoment.partner.store.postgres").parse(
        "postgres://app:p%40ss@127.0.0.1:5433/db?sslmode=disable&password=x")
      assert.equal("postgres://app:***@127.0.0.1:5433/db?sslmode=disable&password=***", name)
      local s = assert(stores.open((pg.url:gsub("^postgres://postgres@", "postgresql://postgres:unused-pw@"))))
      assert.equal((pg.url:gsub("^postgres://postgres@", "postgresql://postgres:***@")), s.name)
      s:close()
    end)

    it("rolls back the whole save_many when the database refuses one row", function()
      local env = require("luasql.postgres").postgres()
      local conn = assert(env:connect(pg.url))
      assert(conn:execute([[CREATE OR REPLACE FUNCTION epartner_refuse() RETURNS trigger AS $$
        BEGIN IF NEW.state = 'refuse me' THEN RAISE EXCEPTION 'refused by trigger'; END IF; RETURN NEW; END
        $$ LANGUAGE plpgsql]]))
      assert(conn:execute("CREATE TRIGGER epartner_refuse BEFORE INSERT OR UPDATE ON endaoment_journeys " ..
        "FOR EACH ROW EXECUTE FUNCTION epartner_refuse()"))
      finally(function()
        conn:execute("DROP TRIGGER IF EXISTS epartner_refuse ON endaoment_journeys")
        conn:close()
        env:close()
      end)
      local s = assert(stores.open(pg.url))
      local a, b = assert(s:claim(fresh_id("a"))), assert(s:claim(fresh_id("b")))
      assert.is_true(s:save(a, "old a", INFO))
      local ok, err = s:save_many({ { a, "new a", INFO }, { b, "refuse me", INFO } })
      assert.is_nil(ok)
      assert.equal("config", err.kind)
      assert.matches("none was saved", err.message)
      assert.matches("refused by trigger", err.message)
      assert.equal("old a", s:load(a))
      assert.is_false(s:load(b))
      assert.is_true(s:save_many({ { a, "new a", INFO }, { b, "new b", INFO } }))
      assert.equal("new b", s:load(b))
      -- the row carries status, base_url and a UTC timestamp
      local cur = assert(conn:execute("SELECT status, base_url, updated_at FROM endaoment_journeys " ..
        "WHERE journey_id = '" .. b.journey_id .. "'"))
      local status, base_url, at = cur:fetch()
      cur:close()
      assert.equal("running", status)
      assert.equal(INFO.base_url, base_url)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", at)
      s:close()
    end)

    it("refuses a document that is not valid UTF-8 or has a NUL", function()
      local s = assert(stores.open(pg.url))
      local c = assert(s:claim(fresh_id()))
      for _, doc in ipairs({ "bad \255", "a\0b" }) do
        local ok, err = s:save(c, doc, INFO)
        assert.is_nil(ok)
        assert.equal("config", err.kind)
      end
      assert.is_false(s:load(c))
      s:close()
    end)

    it("creates its table safely when many workers start at once", function()
      local env = require("luasql.postgres").postgres()
      local conn = assert(env:connect(pg.url))
      assert(conn:execute("CREATE DATABASE epartner_race"))
      local url = pg.url:gsub("/epartner$", "/epartner_race")
      local kids = {}
      finally(function()
        for _, kid in ipairs(kids) do kid.kill() end
      end)
      for k = 1, 6 do
        kids[k] = spawn(string.format([[
          local s, e = require("endaoment.partner.store").open(%q)
          print(s and "open" or ("failed " .. tostring(e)))
          if s then s:close() end
        ]], url))
      end
      for k = 1, 6 do
        assert.equal("open", kids[k].line())
        kids[k].wait()
      end
      conn:close()
      env:close()
    end)

    it("a claim dies with its connection: a lost connection refuses further use", function()
      local s = assert(stores.open(pg.url))
      local id = fresh_id()
      local c = assert(s:claim(id))
      local env = require("luasql.postgres").postgres()
      local conn = assert(env:connect(pg.url))
      finally(function() conn:close(); env:close() end)
      -- end the store's session from outside, as a server restart or a network cut would
      assert(conn:execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name " ..
        "LIKE 'endaoment-partner %' AND pid <> pg_backend_pid()"))
      local ok, err = s:save(c, "{}", INFO)
      assert.is_nil(ok)
      assert.equal("config", err.kind)
      ok, err = s:save(c, "{}", INFO)
      assert.is_nil(ok)
      assert.matches("lost", err.message)
      local c2, err2 = s:claim(fresh_id())
      assert.is_nil(c2)
      assert.equal("config", err2.kind)
      s:close()
      -- its claim is gone with the session
      local s2 = assert(stores.open(pg.url))
      assert(s2:claim(id))
      s2:close()
    end)
  end)

  ---------------------------------------------------------------------------
  -- open
  ---------------------------------------------------------------------------

  describe("open", function()
    it("refuses an unknown scheme, listing the forms, with any password redacted", function()
      for _, spec in ipairs({ "mysql://u:pw123@h/db", "mysql://u:x/pw123@h/db", "redis://h/0?password=pw123",
        "journey.json", "", "postgres:relative", 42 }) do
        local s, err = stores.open(spec)
        assert.is_nil(s)
        assert.equal("config", err.kind)
        assert.equal("store", err.field)
        assert.matches("file:PATH, sqlite:PATH, postgres://", err.message, 1, true)
        assert.is_nil(err.message:find("pw123", 1, true))
      end
    end)

    it("runs the directory store of docs/stores.md", function()
      local f = assert(io.open("docs/stores.md", "rb"))
      local md = f:read("*a")
      f:close()
      local code = md:match("<!%-%- example: directory store %-%->%s*```lua\n(.-)```")
      assert.is_string(code)
      local dir = mkdtemp()
      finally(function() os.execute("rm -rf " .. q(dir)) end)
      code = code:gsub("/var/lib/app/journeys", dir) .. "\nreturn store\n"
      local s = assert((loadstring or load)(code))()
      assert.equal("dir:" .. dir, s.name)
      assert.is_function(s.save_many)
      local a = assert(s:claim("user:a"))
      assert.is_false(s:load(a))
      assert.is_true(s:save(a, '{"a":1}', INFO))
      assert.equal('{"a":1}', s:load(a))
      assert.equal("busy", select(2, s:claim("user:a")).kind)
      local b = assert(s:claim("user:b"))
      assert.is_true(s:save_many({ { a, "A", INFO }, { b, "B", INFO } }))
      assert.equal("A", s:load(a))
      s:release(a)
      assert.equal("config", select(2, s:load(a)).kind)
      s:close()
      assert.equal("config", select(2, s:load(b)).kind)
      local again = assert(s:claim("user:b"))
      assert.equal("B", s:load(again))
      s:close()
    end)

    it("name_of gives the printable name of a spec without opening it", function()
      assert.equal("postgres://app:***@127.0.0.1:5433/db", stores.name_of("postgres://app:s3cret@127.0.0.1:5433/db"))
      assert.equal("postgresql://***@h/db", stores.name_of("postgresql://app:s3/cret@h/db"))
      assert.equal("postgres://h/db?user=u&password=***", stores.name_of("postgres://h/db?user=u&password=s3cret"))
      assert.equal("sqlite:/tmp/j.db", stores.name_of("sqlite:/tmp/j.db"))
      assert.equal("file:j.json", stores.name_of("file:j.json"))
      assert.is_nil(stores.name_of("mysql://u:s3cret@h/db"):find("s3cret", 1, true))
      assert.equal("mine", stores.name_of({ name = "mine" }))
    end)

    it("returns a table store as it is, with save_many filled in; refuses one without the methods", function()
      local saved = {}
      local custom = {
        claim = function(_, id) return { journey_id = id } end,
        load = function(_, c) return saved[c.journey_id] or false end,
        save = function(_, c, text) saved[c.journey_id] = text; return true end,
        release = function() end,
        close = function() end,
      }
      local s = assert(stores.open(custom))
      assert.equal(custom, s)
      local a, b = s:claim("a"), s:claim("b")
      assert.is_true(s:save_many({ { a, "A", INFO }, { b, "B", INFO } }))
      assert.equal("A", s:load(a))
      assert.equal("B", s:load(b))
      local bad, err = stores.open({ claim = function() end, load = function() end })
      assert.is_nil(bad)
      assert.equal("config", err.kind)
      assert.matches("save, release, close", err.message)
    end)
  end)
end)
