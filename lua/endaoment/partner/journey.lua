-- endaoment.partner.journey: the five partner steps as one resumable,
-- exactly-once run, and batches of such runs across workers.
--
--   local result, err = journey.run(client, plan, { store = "sqlite:j.db", on_step = fn })
--   local summary = journey.run_many(client, plans, { store = "postgres://...", concurrency = 32 })
--
-- Exactly-once does not rest on local state. Every keyed step's
-- idempotency key is derived from the partner's own ids (a pledge's
-- partnerOperationId, a grant's partnerFundingTransferId, otherwise the
-- journey's user and the step's place in the plan), users and funds are
-- deduplicated by the API on their partner identifiers, so a re-run with a
-- lost store, a new store or on another machine sends the same keys and the
-- API answers replays. The store is the convenience on top: finished steps
-- are skipped without a request, a claim keeps two workers off one journey,
-- and a key that cannot be derived (derive_keys = false) is saved durably
-- before the request that carries it leaves.
local partner = require "endaoment.partner"
local core = require "endaoment.partner.core"
local cjson = require "cjson.safe"
local canonical = require "endaoment.partner.json"
local stores = require "endaoment.partner.store"

local M = {}

M.FORMAT = "endaoment-journey/1"

local PLACEHOLDER_ID = "00000000-0000-4000-8000-000000000000"
local PLAN_KEYS = { user = true, fund = true, donations = true, grant = true, missing_orgs = true,
  user_id = true, fund_id = true }

local function err(kind, message, extra)
  return core.error(kind, message, extra)
end

local function copy(t)
  if type(t) ~= "table" then return t end
  local out = {}
  for k, v in pairs(t) do out[k] = copy(v) end
  return setmetatable(out, getmetatable(t))
end

local function prefixed(e, prefix)
  local field = e.field and (prefix .. "." .. e.field) or prefix
  local message = e.message
  if e.field and message:sub(1, #e.field) == e.field then
    message = prefix .. "." .. message
  else
    message = prefix .. ": " .. message
  end
  return err("invalid", message, { field = field })
end

-- Exactly the keys 1..n: a Lua plan like { d1, nil, d3 } must not lose d3.
local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return false end
    n = n + 1
  end
  return n == #t
end

-- The one loopback rule (endaoment.partner.net), on a base URL.
local function is_loopback_url(url)
  local net = require "endaoment.partner.net"
  local _, host = net.parse_base_url(url)
  return host ~= nil and net.is_loopback_host(host)
end

---------------------------------------------------------------------------
-- plan -> steps
---------------------------------------------------------------------------

-- Each step: id (state key), kind (1..5: user, fund, donation, grant,
-- report), name (operation), body (as planned).
local function build_steps(plan)
  local steps = {}
  local function add(s) steps[#steps + 1] = s end

  if plan.user then
    add({ id = "user", kind = 1, name = "provision_user", op = "provision_user", body = plan.user })
  end
  if plan.fund then
    add({ id = "fund", kind = 2, name = "create_fund", op = "create_fund", body = plan.fund,
      acting_user = true })
  end
  for i, d in ipairs(plan.donations or {}) do
    local kind = type(d) == "table" and d.kind or nil
    local body = copy(d)
    if type(body) == "table" then body.kind = nil end
    local op = kind == "stock" and "record_stock_donation" or "record_cash_donation"
    add({ id = "donations[" .. i .. "]", kind = 3, index = i, name = op, op = op,
      body = body, acting_user = true, keyed = true, fund_field = "receivingFundId" })
  end
  if plan.grant then
    add({ id = "grant", kind = 4, name = "submit_grant", op = "submit_grant", body = plan.grant,
      keyed = true, fund_field = "originFundId" })
  end
  for i, o in ipairs(plan.missing_orgs or {}) do
    -- Not keyed: the report's schema is not public, so the client invents no
    -- key; the API is assumed to answer a known EIN with the first report.
    add({ id = "missing_orgs[" .. i .. "]", kind = 5, index = i, name = "report_missing_org",
      op = "report_missing_org", body = o })
  end
  return steps
end

-- Fills the ids that flow from earlier steps, without touching the plan.
local function wire(step, ctx)
  local body = copy(step.body)
  if step.fund_field and body[step.fund_field] == nil then
    body[step.fund_field] = ctx.fund_id
  end
  return body
end

local function call_opts(step, ctx, key)
  local o = {}
  if step.acting_user and ctx.user_id then o.user_id = ctx.user_id end
  if key then o.idempotency_key = key end
  return o
end

local function plan_context(plan, placeholders)
  local ctx = { user_id = plan.user_id, fund_id = plan.fund_id }
  if placeholders then
    if plan.user and not ctx.user_id then ctx.user_id = PLACEHOLDER_ID end
    if plan.fund and not ctx.fund_id then ctx.fund_id = PLACEHOLDER_ID end
  end
  return ctx
end

-- The whole plan is checked before anything is sent.
function M.validate(plan)
  if type(plan) ~= "table" then return nil, err("invalid", "plan must be a table", { field = "plan" }) end
  for k in pairs(plan) do
    if not PLAN_KEYS[k] then
      return nil, err("invalid", "plan has an unknown part '" .. tostring(k) ..
        "' (user, fund, donations, grant, missing_orgs, user_id, fund_id)", { field = tostring(k) })
    end
  end
  for _, k in ipairs({ "user_id", "fund_id" }) do
    if plan[k] ~= nil and not partner.is_uuid(plan[k]) then
      return nil, err("invalid", k .. " must be a UUID", { field = k })
    end
  end
  for _, k in ipairs({ "user", "fund", "grant" }) do
    if plan[k] ~= nil and type(plan[k]) ~= "table" then
      return nil, err("invalid", k .. " must be a table", { field = k })
    end
  end
  for _, k in ipairs({ "donations", "missing_orgs" }) do
    if plan[k] ~= nil and not is_list(plan[k]) then
      return nil, err("invalid", k .. " must be a list", { field = k })
    end
  end
  for i, d in ipairs(plan.donations or {}) do
    if type(d) ~= "table" then
      return nil, err("invalid", "donations[" .. i .. "] must be a table", { field = "donations[" .. i .. "]" })
    end
    if d.kind ~= "cash" and d.kind ~= "stock" then
      return nil, err("invalid", "donations[" .. i .. "].kind must be \"cash\" or \"stock\"",
        { field = "donations[" .. i .. "].kind" })
    end
  end
  local ctx = plan_context(plan, true)
  for _, step in ipairs(build_steps(plan)) do
    if step.acting_user and not ctx.user_id and step.body.partnerUserIdentifier == nil then
      return nil, err("invalid", step.id .. " needs an acting user: add plan.user, plan.user_id, or a " ..
        "partnerUserIdentifier in the step", { field = step.id })
    end
    if step.fund_field and step.body[step.fund_field] == nil and not ctx.fund_id then
      return nil, err("invalid", step.id .. "." .. step.fund_field .. " is required when the plan has " ..
        "no fund step or fund_id", { field = step.id .. "." .. step.fund_field })
    end
    local ok, e = partner.validate(step.op, wire(step, ctx))
    if not ok then return nil, prefixed(e, step.id) end
  end
  return true
end

---------------------------------------------------------------------------
-- identity
---------------------------------------------------------------------------

local function trimmed_id(v)
  if type(v) ~= "string" then return nil end
  return partner.partner_identifier(v) or v
end

-- The journey's id in a store: its user, as the partner names it. Plans
-- without a user step or user_id fall back to their fund, then to the plan
-- itself (a changed plan is then another journey: only for one-off runs).
function M.journey_id(plan)
  if type(plan.user) == "table" and plan.user.partnerUserIdentifier then
    return "user:" .. trimmed_id(plan.user.partnerUserIdentifier)
  end
  if plan.user_id then return "user_id:" .. plan.user_id:lower() end
  if plan.fund_id then return "fund_id:" .. plan.fund_id:lower() end
  if type(plan.fund) == "table" and plan.fund.partnerAccountIdentifier then
    return "account:" .. trimmed_id(plan.fund.partnerAccountIdentifier)
  end
  return "plan:" .. core.sha256_hex(canonical.encode(plan))
end

local function identity(plan, client)
  return {
    base_url = client.base_url,
    partnerUserIdentifier = plan.user and trimmed_id(plan.user.partnerUserIdentifier)
      or plan.user_id or canonical.null,
    partnerAccountIdentifier = plan.fund and trimmed_id(plan.fund.partnerAccountIdentifier)
      or plan.fund_id or canonical.null,
  }
end

-- Steps whose outcome is unknown: they must be re-sent exactly as they were.
local function unknown_steps(st)
  local out = {}
  for id, rec in pairs(st.steps) do
    if rec.status == "sent" then out[#out + 1] = id end
  end
  table.sort(out)
  return out
end

-- Decodes and checks a saved document against this run. opts.rebind moves a
-- journey of one sandbox state to its new loopback URL.
local function check_state(text, where, ident, jid, opts)
  -- (a batch's peek hands over the table it decoded already)
  local st = type(text) == "table" and text or cjson.decode(text)
  if type(st) ~= "table" or st.format ~= M.FORMAT or type(st.steps) ~= "table" or type(st.identity) ~= "table" then
    return nil, err("config", where .. " holds no journey state (corrupt, or another kind of file); it was " ..
      "left untouched: inspect it or restore it from a backup. Re-running the plan against a fresh store " ..
      "is safe for every step whose key is derived, but check first", { field = "store" })
  end
  local saved_url = st.identity.base_url
  if saved_url ~= ident.base_url then
    local unknown = unknown_steps(st)
    local pending = #unknown > 0 and (" (outcome unknown: " .. table.concat(unknown, ", ") .. ")") or ""
    if opts.rebind and opts.rebind == ident.base_url then
      if not (is_loopback_url(saved_url) and is_loopback_url(ident.base_url)) then
        return nil, err("config", "rebind moves a journey only from one loopback URL to another (one " ..
          "sandbox state that restarted on another port); " .. tostring(saved_url) .. " -> " ..
          ident.base_url .. " is not that. Point the client back at " .. tostring(saved_url), { field = "rebind" })
      end
      st.identity.base_url = ident.base_url
      st.rebound_from = saved_url
    else
      return nil, err("config", string.format("journey %s in %s was run against %s%s; this run targets %s. " ..
        "Point the client back at %s (ENDAOMENT_BASE_URL) and run the same command again. If the same " ..
        "sandbox state now listens on another loopback URL, add --rebind %s (rebind = that URL). Do not " ..
        "start over with another store while any outcome is unknown.",
        jid, where, tostring(saved_url), pending, ident.base_url, tostring(saved_url), ident.base_url),
        { field = "base_url", saved_base_url = saved_url })
    end
  end
  for _, k in ipairs({ "partnerUserIdentifier", "partnerAccountIdentifier" }) do
    local saved, now = st.identity[k], ident[k]
    if saved == cjson.null then saved = nil end
    if now == canonical.null then now = nil end
    if saved ~= now then
      return nil, err("config", string.format("%s holds the journey of %s %s, and this plan has %s. If you " ..
        "changed %s in the plan, restore it (the saved steps belong to it); if this plan is another " ..
        "journey, give it a store of its own (--state FILE) or use a store that holds many journeys " ..
        "(sqlite:PATH, postgres://...)", where, k, tostring(saved), tostring(now), k), { field = k })
    end
  end
  return st
end

---------------------------------------------------------------------------
-- advice
---------------------------------------------------------------------------

-- A failure the API answered definitively (or that never left): nothing was
-- created under the step's key, so the step may be corrected and re-run.
local function definitive(e)
  if e.kind == "invalid" or e.kind == "config" then return true end
  return e.kind == "http" and not e.retryable and type(e.status) == "number" and e.status >= 400 and e.status < 500
end

-- What to do about a journey's failure, in one sentence. Never advises
-- anything that re-sends money under a new key.
function M.advice(e)
  if type(e) ~= "table" then return "see the error" end
  if e.kind == "busy" then
    return "another worker is running this journey; it finishes it (run again later to see it skipped)"
  end
  if e.kind == "invalid" and not e.step then
    return "fix " .. tostring(e.field or "the plan") .. " in the plan; nothing was sent"
  end
  if e.kind == "config" then
    return "fix the setup as the message says, then run the same command again"
  end
  if e.kind == "http" and (e.status == 401 or e.status == 403) then
    return "fix the credentials (API key, Bearer token or the acting user's rights), not the plan; then run " ..
      "the same command again: finished steps stay finished"
  end
  if e.conflict then
    return "restore " .. tostring(e.field) .. "'s original payload in " .. tostring(e.step) ..
      ", or give a new operation its own " .. tostring(e.field) .. "; nothing was created by this request"
  end
  if e.rejected then
    return "the API refused " .. tostring(e.step) .. " and created nothing for it: fix that step in the " ..
      "plan and run the same command again (finished steps stay finished)"
  end
  return "the outcome of " .. tostring(e.step or "the step") .. " is unknown and nothing is lost: run the " ..
    "same command again with the plan unchanged; it re-sends the same idempotency key"
end

---------------------------------------------------------------------------
-- one journey
---------------------------------------------------------------------------

local function result_id(res)
  return type(res) == "table" and type(res.id) == "string" and res.id or nil
end

-- The key a keyed step carries: the plan's, else derived from the step's
-- natural id, else from the journey and the step's place in it; random
-- only with derive_keys = false. Returns key, source.
local function step_key(client, step, body, jid)
  if type(body) == "table" and body.idempotencyKey ~= nil then return body.idempotencyKey, "given" end
  if client.derive_keys == false or not client.derive_key then return partner.uuid4(), "random" end
  local nid = partner._natural_id(step.op, body)
  if nid then return client:derive_key(step.op, nid), "derived" end
  return client:derive_key(step.op, jid .. "/" .. step.id), "derived"
end

local function state_status(st, steps)
  for _, step in ipairs(steps) do
    local rec = st.steps[step.id]
    if not rec then return "running" end
    if rec.status == "rejected" then return "rejected" end
    if rec.status ~= "done" then return "failed" end
  end
  return "done"
end

-- Runs one journey through env:
--   env.load() -> text | false | nil, err
--   env.save(text, info) -> true | nil, err      (durable on return)
--   env.call(op, body, opts) -> result, err, meta
--   env.steps, env.fingerprints: optional, the plan's steps and their
--   fingerprints when the caller has them already
-- so the same code runs blocking (run) and inside a batch's coroutine.
local function run_one(env, client, plan, opts)
  local jid = env.journey_id
  local ident = identity(plan, client)
  local st
  local text, lerr = env.load()
  if text == nil then return nil, lerr end
  if text then
    local e
    st, e = check_state(text, env.where, ident, jid, opts)
    if not st then return nil, e end
  else
    st = { format = M.FORMAT, journey_id = jid, identity = ident, steps = {} }
  end

  local steps = env.steps or build_steps(plan)
  local fingerprints = env.fingerprints or {}
  -- durable: this save must survive a crash of the database too. Only a
  -- random key must (it cannot be made again); losing any other save rolls
  -- the journey back to a state whose re-run re-sends with the same keys,
  -- as a worker killed between a response and its save already does.
  local function save(durable)
    local status = state_status(st, steps)
    -- The document needs no canonical key order (only fingerprints do), and
    -- lua-cjson encodes it several times faster than the pure-Lua encoder.
    local doc, eerr = cjson.encode(st)
    if not doc then
      return nil, err("config", "cannot encode the journey state: " .. tostring(eerr), { field = "store" })
    end
    local okw, werr = env.save(doc, { status = status, base_url = ident.base_url, durable = durable })
    if not okw then
      return nil, err("config", "cannot save the journey state to " .. env.where .. ": " ..
        tostring(type(werr) == "table" and werr.message or werr), { field = "store" })
    end
    return true
  end
  if st.rebound_from then
    local okw, werr = save()
    if not okw then return nil, werr end
  end

  local ctx = plan_context(plan, false)
  local result = { donations = {}, missing_orgs = {}, steps = {}, journey_id = jid }
  local total = #steps

  local function record(pos, step, rec, outcome, elapsed, status)
    local res = rec.result
    if step.id == "user" then
      result.user = res
      ctx.user_id = result_id(res) or ctx.user_id
    elseif step.id == "fund" then
      result.fund = res
      ctx.fund_id = result_id(res) or ctx.fund_id
    elseif step.kind == 3 then
      result.donations[step.index] = res
    elseif step.id == "grant" then
      result.grant = res
    else
      result.missing_orgs[step.index] = res
    end
    local info = { n = pos, total = total, id = step.id, name = step.name, outcome = outcome,
      result_id = result_id(res), elapsed_ms = elapsed, status = status, idempotency_key = rec.idempotencyKey,
      idempotency_key_source = rec.key_source }
    result.steps[#result.steps + 1] = info
    if opts.on_step then opts.on_step(info) end
  end

  for pos, step in ipairs(steps) do
    local fingerprint = fingerprints[pos] or canonical.encode(step.body)
    local rec = st.steps[step.id]
    if rec and rec.fingerprint ~= fingerprint then
      if rec.status == "rejected" then
        -- The API refused the old payload: its key created nothing.
        rec = nil
      elseif rec.status == "done" then
        return nil, err("config", step.id .. " is already done with another payload than this plan's; " ..
          "restore the step as it was (a finished step is never sent again)", { field = step.id, step = step.id }),
          result
      else
        return nil, err("config", step.id .. " was sent and its outcome is unknown, so it must be re-sent " ..
          "exactly as it was, with its saved idempotency key: restore the step in the plan and run again. " ..
          "(Do not start over with another store: steps whose keys were random would be sent again: " ..
          "duplicates.)",
          { field = step.id, step = step.id }), result
      end
    end
    if rec and rec.status == "done" then
      record(pos, step, rec, "skipped", 0, nil)
    else
      local body = wire(step, ctx)
      if not rec then
        rec = { fingerprint = fingerprint, status = "sent" }
        if step.keyed then
          rec.idempotencyKey, rec.key_source = step_key(client, step, body, jid)
        end
        st.steps[step.id] = rec
      end
      rec.status = "sent"
      -- A key that cannot be derived again is on disk before its request
      -- leaves; a derived one (and the API's dedup of users and funds)
      -- needs no write first.
      if rec.key_source == "random" then
        local okw, werr = save(true)
        if not okw then return nil, werr, result end
      end
      local res, cerr, meta = env.call(step.op, body, call_opts(step, ctx, rec.idempotencyKey))
      if not res then
        if cerr.status == 409 and rec.key_source == "derived" and not cerr.conflict then
          -- The journey handed the client its derived key: name the id it came from.
          local nid, field = partner._natural_id(step.op, body)
          partner._natural_conflict(cerr, field or "step", nid or (jid .. "/" .. step.id))
        end
        cerr.step = step.id
        cerr.rejected = definitive(cerr)
        if cerr.rejected then
          rec.status, rec.error = "rejected", tostring(cerr)
        end
        local okw, werr = save(false)
        if not okw then return nil, werr, result end
        local info = { n = pos, total = total, id = step.id, name = step.name, outcome = "failed",
          elapsed_ms = meta and meta.elapsed_ms, status = meta and meta.status, error = cerr,
          idempotency_key = rec.idempotencyKey, idempotency_key_source = rec.key_source }
        result.steps[#result.steps + 1] = info
        if opts.on_step then opts.on_step(info) end
        return nil, cerr, result
      end
      rec.status, rec.result, rec.error = "done", res, nil
      local okw, werr = save(false)
      if not okw then return nil, werr, result end
      local replayed = meta.headers and meta.headers["x-idempotent-replayed"] == "true"
      local outcome = replayed and "replayed" or (meta.status == 201 and "created")
        or (meta.status == 200 and "existing") or "ok"
      record(pos, step, rec, outcome, meta.elapsed_ms, meta.status)
    end
  end
  return result
end

local function open_store(opts)
  if opts.store ~= nil and opts.state_file ~= nil then
    return nil, err("config", "give store or state_file, not both", { field = "store" })
  end
  local spec = opts.store
  if spec == nil and opts.state_file then spec = "file:" .. opts.state_file end
  if spec == nil then return false end
  if type(spec) == "table" and rawget(spec, "_journey_store_opened") then return spec, nil, true end
  local s, e = stores.open(spec)
  if not s then return nil, e end
  return s, nil, type(spec) == "table"
end

local function busy_error(jid, where, e)
  return err("busy", "another run is using journey " .. jid .. " in " .. where .. " (" ..
    tostring(e and e.message or e) .. "); wait for it to finish: running both at once is refused",
    { field = "store" })
end

-- opts: store ("file:PATH", "sqlite:PATH", "postgres://...", or a store
-- object), or state_file (= "file:PATH"); on_step; rebind. Without either,
-- nothing is kept locally and derived keys alone keep a re-run safe.
function M.run(client, plan, opts)
  opts = opts or {}
  local ok, verr = M.validate(plan)
  if not ok then return nil, verr end
  local store, serr, borrowed = open_store(opts)
  if store == nil then return nil, serr end
  local jid = M.journey_id(plan)
  local env = { journey_id = jid, where = "no store" }
  env.call = function(op, body, o) return client[op](client, body, o) end
  if not store then
    env.load = function() return false end
    env.save = function() return true end
    return run_one(env, client, plan, opts)
  end
  env.where = store.name
  local claim, cerr = store:claim(jid)
  if not claim then
    if not borrowed then store:close() end
    if cerr and cerr.kind == "busy" then return nil, busy_error(jid, store.name, cerr) end
    return nil, cerr
  end
  env.load = function() return store:load(claim) end
  env.save = function(text, info) return store:save(claim, text, info) end
  local okr, res, e, partial = pcall(run_one, env, client, plan, opts)
  store:release(claim)
  if not borrowed then store:close() end
  if not okr then error(res, 0) end   -- e.g. raised by on_step: after releasing
  return res, e, partial
end

---------------------------------------------------------------------------
-- batches
---------------------------------------------------------------------------

local function now_ms() return partner._wall_ms() end

-- What a batch reports of one finished journey.
local function summarise(index, jid, res, e, partial)
  local r = { index = index, journey_id = jid }
  local src = res or partial or {}
  r.user_id = result_id(src.user)
  r.fund_id = result_id(src.fund)
  r.grant_id = result_id(src.grant)
  local dids = {}
  for i, d in pairs(src.donations or {}) do dids[i] = result_id(d) end
  r.donation_ids = dids
  if res then
    local all_skipped = #res.steps > 0
    for _, s in ipairs(res.steps) do if s.outcome ~= "skipped" then all_skipped = false end end
    r.ok, r.outcome = true, all_skipped and "skipped" or "done"
  else
    r.ok = false
    r.outcome = (e.kind == "invalid" and not e.step) and "invalid" or (e.rejected and "rejected") or "failed"
    r.error, r.error_kind, r.step = e, e.kind, e.step
    r.advice = M.advice(e)
  end
  return r
end

-- plans: a list, or an iterator returning plan (nil at the end); an entry
-- may be false plus an error for input that could not be read. An
-- iterator's third value (e.g. M.batch_file's line number) comes back as
-- the result's `line`.
local function plan_source(plans)
  if type(plans) == "function" then return plans end
  if type(plans) ~= "table" then return nil end
  local i = 0
  return function()
    i = i + 1
    if plans[i] == nil then return nil end
    return plans[i]
  end
end

-- A uniform whole number in [1, n] from the core's getrandom pool: Lua
-- 5.1's math.random starts from the same seed in every process, and
-- workers started together must not share an order.
local function random_upto(n)
  local hex = core.uuid4():gsub("-", ""):sub(1, 12)
  return tonumber(hex, 16) % n + 1
end

-- A batch file: one JSON plan per line, blank lines skipped. Every line is
-- decoded and validated first, so a bad line stops the batch before any
-- request. Returns an iterator for run_many (plan, nil, line number) and
-- the number of plans, or nil, err (kind "invalid", field "batch";
-- err.lines: up to 20 "PATH:N: why"; err.bad: how many lines are bad).
-- opts.order: "spread" (default) reads blocks of opts.block (16) plans in
-- an order of this process's own, so that workers started together on one
-- file mostly claim different journeys; "file" reads in line order. Only
-- each block's offset is kept, a few bytes per 16 plans.
function M.batch_file(path, opts)
  opts = opts or {}
  local order, block = opts.order or "spread", opts.block or 16
  if order ~= "spread" and order ~= "file" then
    error("journey.batch_file: order must be \"spread\" or \"file\"", 2)
  end
  if type(block) ~= "number" or block < 1 or block % 1 ~= 0 then
    error("journey.batch_file: block must be a whole number >= 1", 2)
  end
  local f, oerr = io.open(path, "rb")
  if not f then
    return nil, err("invalid", "cannot read batch file " .. tostring(path) .. ": " .. tostring(oerr),
      { field = "batch" })
  end
  local offsets, firsts = {}, {}
  local n, total, bad, lines, at = 0, 0, 0, {}, 0
  while true do
    local line = f:read("*l")
    if not line then break end
    local start = at
    at = at + #line + 1 -- "*l" drops the "\n"
    n = n + 1
    if line:find("%S") then
      if total % block == 0 then
        offsets[#offsets + 1], firsts[#firsts + 1] = start, n
      end
      total = total + 1
      local p, derr = cjson.decode(line)
      local why
      if type(p) ~= "table" then
        why = "not a JSON object (" .. tostring(derr or type(p)) .. ")"
      else
        local ok, verr = M.validate(p)
        if not ok then why = tostring(verr) end
      end
      if why then
        bad = bad + 1
        if #lines < 20 then lines[#lines + 1] = path .. ":" .. n .. ": " .. why end
      end
    end
  end
  f:close()
  if bad > 0 then
    return nil, err("invalid", bad .. " bad line(s) in " .. path .. "; nothing was sent", { field = "batch",
      lines = lines, bad = bad })
  end
  local seq = {}
  for i = 1, #offsets do seq[i] = i end
  if order == "spread" then
    for i = #seq, 2, -1 do
      local j = random_upto(i)
      seq[i], seq[j] = seq[j], seq[i]
    end
  end
  local fh, k, left, lineno = nil, 0, 0, 0
  local function iter()
    while true do
      if left == 0 then
        k = k + 1
        if k > #seq then
          if fh then fh:close(); fh = nil end
          return nil
        end
        if not fh then
          fh = io.open(path, "rb")
          if not fh then
            k = #seq
            return false, err("invalid", "cannot read batch file " .. path .. " again", { field = "batch" })
          end
        end
        fh:seek("set", offsets[seq[k]])
        lineno, left = firsts[seq[k]] - 1, block
      end
      local line = fh:read("*l")
      if not line then
        left = 0 -- the file was cut short since it was checked
      else
        lineno = lineno + 1
        if line:find("%S") then
          left = left - 1
          local p, derr = cjson.decode(line)
          if type(p) ~= "table" then
            return false, err("invalid", path .. ":" .. lineno .. ": not a JSON object (" ..
              tostring(derr or type(p)) .. "; the file changed after it was checked)", { field = "plan" }), lineno
          end
          return p, nil, lineno
        end
      end
    end
  end
  return iter, total
end

local function use_async(client)
  local t = client.transport
  return type(t) == "table" and t.name == "curl" and client.submit_grant_async ~= nil
end

-- Runs many journeys, each exactly once, concurrency at a time in this
-- process (libcurl multi) and across processes and machines through the
-- shared store's claims. A journey another worker holds is retried until
-- it is free, then found done and skipped.
-- opts: store (required), concurrency (8), on_progress(p), on_result(r),
--       on_step(info, r_index), rebind, busy_retry_ms (100), total.
-- Returns a summary table, or nil, err when the batch cannot start.
function M.run_many(client, plans, opts)
  opts = opts or {}
  local next_plan = plan_source(plans)
  if not next_plan then
    return nil, err("invalid", "plans must be a list or an iterator function", { field = "plans" })
  end
  local conc = opts.concurrency or 8
  if type(conc) ~= "number" or conc < 1 or conc % 1 ~= 0 then
    return nil, err("invalid", "concurrency must be a whole number >= 1", { field = "concurrency" })
  end
  if opts.store == nil and opts.state_file == nil then
    return nil, err("config", "a batch needs a store that holds many journeys: store = \"sqlite:PATH\" or " ..
      "\"postgres://...\"", { field = "store" })
  end
  local store, serr, borrowed = open_store(opts)
  if not store then return nil, serr end
  if store.multi == false then
    if not borrowed then store:close() end
    return nil, err("config", "a batch needs a store that holds many journeys, and " .. store.name ..
      " holds one: use sqlite:PATH (one machine) or postgres://... (many machines)", { field = "store" })
  end
  local async = use_async(client)
  if not async then conc = 1 end

  local summary = { total = 0, done = 0, skipped = 0, failed = 0, invalid = 0, rejected = 0, busy_waits = 0 }
  local t0 = now_ms()
  local index = 0
  local deferred = {}    -- { plan =, index =, due = } journeys another worker holds
  local tasks = {}       -- running journeys
  local exhausted = false
  local last_progress = 0

  local function progress(final)
    if not opts.on_progress then return end
    local t = now_ms()
    if not final and t - last_progress < 200 then return end
    last_progress = t
    local finished = summary.done + summary.skipped + summary.failed + summary.invalid + summary.rejected
    local elapsed = (t - t0) / 1000
    local rate = elapsed > 0 and finished / elapsed or 0
    local eta
    if opts.total and rate > 0 then eta = math.max(0, (opts.total - finished) / rate) end
    opts.on_progress({ finished = finished, done = summary.done, skipped = summary.skipped,
      failed = summary.failed + summary.invalid + summary.rejected, in_flight = #tasks,
      waiting = #deferred, total = opts.total, rate = rate, eta_s = eta, elapsed_s = elapsed, final = final })
  end

  local function finish(r, line)
    r.line = line
    local k = r.outcome
    if k == "done" then summary.done = summary.done + 1
    elseif k == "skipped" then summary.skipped = summary.skipped + 1
    elseif k == "invalid" then summary.invalid = summary.invalid + 1
    elseif k == "rejected" then summary.rejected = summary.rejected + 1
    else summary.failed = summary.failed + 1 end
    if opts.on_result then opts.on_result(r) end
    progress(false)
  end

  -- A journey whose every step is saved done, with this plan's payloads and
  -- base URL, is reported as skipped from its document alone: no claim, no
  -- request (other workers' finished journeys cost one read each).
  local function finished_elsewhere(plan, jid, item)
    local text
    if item.peeked then
      text = item.doc
    elseif store.peek then
      text = store:peek(jid)
    else
      return nil
    end
    local st = text and cjson.decode(text)
    if type(st) ~= "table" or type(st.steps) ~= "table" or type(st.identity) ~= "table" or
       st.identity.base_url ~= client.base_url then
      return nil
    end
    local steps, fps = build_steps(plan), {}
    for i, step in ipairs(steps) do
      local rec = st.steps[step.id]
      if type(rec) ~= "table" or rec.status ~= "done" then return nil end
      fps[i] = canonical.encode(step.body)
      if rec.fingerprint ~= fps[i] then return nil end
    end
    local env = { journey_id = jid, where = store.name, load = function() return st end, steps = steps,
      fingerprints = fps }
    env.save = function() error("journey: a finished journey was about to be saved") end
    env.call = function() error("journey: a finished journey was about to send a request") end
    return run_one(env, client, plan, {})
  end

  local function start(item)
    local plan, idx = item.plan, item.index
    local jid = item.jid
    local done = finished_elsewhere(plan, jid, item)
    if done then
      finish(summarise(idx, jid, done), item.line)
      return
    end
    local claim, cerr = store:claim(jid, { quiet = true })
    if not claim then
      if cerr and cerr.kind == "busy" then
        summary.busy_waits = summary.busy_waits + 1
        item.due = now_ms() + (opts.busy_retry_ms or 100)
        item.peeked, item.doc = nil, nil -- by then it is likely done: look again
        deferred[#deferred + 1] = item
        return
      end
      finish(summarise(idx, jid, nil, cerr), item.line)
      return
    end
    local task = { index = idx, jid = jid, claim = claim, state = "ready", line = item.line }
    local env = { journey_id = jid, where = store.name }
    env.load = function() return store:load(claim) end
    env.save = function(text, info) return coroutine.yield("save", text, info) end
    if async then
      env.call = function(op, body, o) return coroutine.yield("call", op, body, o) end
    else
      env.call = function(op, body, o) return client[op](client, body, o) end
    end
    local jopts = { rebind = opts.rebind }
    if opts.on_step then jopts.on_step = function(info) opts.on_step(info, idx) end end
    task.co = coroutine.create(function() return "end", run_one(env, client, plan, jopts) end)
    task.args = {}
    tasks[#tasks + 1] = task
  end

  -- Plans are read LOOKAHEAD at a time, and the store is asked once which
  -- of them another worker finished (store:peek_done), instead of once per
  -- plan: most of a fleet's reads are of journeys someone else ran.
  local LOOKAHEAD = 16
  local ahead, ahead_pos = {}, 1
  local function fill()
    ahead, ahead_pos = {}, 1
    local ids = {}
    while #ahead < LOOKAHEAD do
      local plan, perr, line = next_plan()
      if plan == nil then exhausted = true; break end
      index = index + 1
      summary.total = summary.total + 1
      if plan == false then
        finish(summarise(index, "-", nil, perr or err("invalid", "unreadable plan", { field = "plan" })), line)
      else
        local ok, verr = M.validate(plan)
        if not ok then
          finish(summarise(index, "-", nil, verr), line)
        else
          local item = { plan = plan, index = index, line = line, jid = M.journey_id(plan) }
          ahead[#ahead + 1] = item
          ids[#ids + 1] = item.jid
        end
      end
    end
    if #ids > 0 and store.peek_done then
      -- On failure each journey is looked at again on its own.
      local docs = store:peek_done(ids)
      if docs then
        for _, item in ipairs(ahead) do item.peeked, item.doc = true, docs[item.jid] or false end
      end
    end
  end

  local function take()
    local t = now_ms()
    for i, item in ipairs(deferred) do
      if item.due <= t then table.remove(deferred, i); return item end
    end
    if ahead_pos > #ahead then
      if exhausted then return nil end
      fill()
      if ahead_pos > #ahead then return nil end
    end
    local item = ahead[ahead_pos]
    ahead[ahead_pos] = nil
    ahead_pos = ahead_pos + 1
    return item
  end

  local unpack = table.unpack or unpack
  local saves = {}

  -- Resumes one task with its pending answer; it runs to its next request,
  -- save or end.
  local function resume(task)
    local ok, what, a, b, c = coroutine.resume(task.co, unpack(task.args, 1, task.args.n))
    task.args = {}
    if not ok then
      store:release(task.claim)
      error(debug.traceback(task.co, tostring(what)), 0)
    end
    if what == "save" then
      task.state = "saving"
      saves[#saves + 1] = { task.claim, a, b, task = task }
    elseif what == "call" then
      task.state = "waiting"
      local fn = client[a .. "_async"]
      local h, e, meta = fn(client, b, c, function(res, cerr, m)
        task.args = { res, cerr, m, n = 3 }
        task.state = "ready"
      end)
      if not h then
        task.args = { nil, e, meta, n = 3 }
        task.state = "ready"
      end
    else -- "end": run_one's return values
      task.state = "finished"
      store:release(task.claim)
      finish(summarise(task.index, task.jid, a, b, c), task.line)
    end
  end

  while true do
    while #tasks < conc do
      local item = take()
      if not item then break end
      start(item)
    end
    -- Run every ready task to its next yield; group their saves into one
    -- transaction, then let them go on (their requests leave after it).
    local progressed = true
    while progressed do
      progressed = false
      for _, task in ipairs(tasks) do
        if task.state == "ready" then resume(task); progressed = true end
      end
      if #saves > 0 then
        local list = saves
        saves = {}
        local okw, werr = store:save_many(list)
        for _, s in ipairs(list) do
          s.task.args = { okw, werr, n = 2 }
          s.task.state = "ready"
        end
        progressed = true
      end
    end
    local kept = {}
    for _, task in ipairs(tasks) do if task.state ~= "finished" then kept[#kept + 1] = task end end
    tasks = kept
    local unread = not exhausted or ahead_pos <= #ahead
    if #tasks == 0 and #deferred == 0 and not unread then break end
    if #tasks < conc and unread then
      -- room for more: loop straight back
      if async and client:pending() > 0 then client:poll(0) end
    elseif async and client:pending() > 0 then
      client:wait(50)
    elseif #deferred > 0 then
      local due = math.huge
      for _, item in ipairs(deferred) do due = math.min(due, item.due) end
      local ms = math.max(1, math.min(250, due - now_ms()))
      if client.transport.sleep then client.transport:sleep(ms) else require("socket").sleep(ms / 1000) end
    end
  end
  if not borrowed then store:close() end
  summary.elapsed_ms = now_ms() - t0
  progress(true)
  summary.ok = summary.failed + summary.invalid + summary.rejected == 0
  return summary
end

return M
