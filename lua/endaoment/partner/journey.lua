-- endaoment.partner.journey: the five partner steps as one resumable,
-- exactly-once run.
--
--   local result, err = journey.run(client, plan, { state_file = "j.json", on_step = fn })
--
-- Exactly-once rests on two rules. Every idempotency key is written durably
-- to the state file before the request that carries it is sent; and a
-- step's answer is saved before the next step starts. A run killed at any
-- point is resumed by running the same plan with the same state file:
-- finished steps are skipped, the unfinished one is re-sent with its saved
-- key, and the API answers it as a replay instead of creating money twice.
local partner = require "endaoment.partner"
local core = require "endaoment.partner.core"
local cjson = require "cjson.safe"
local canonical = require "endaoment.sandbox.json"

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

---------------------------------------------------------------------------
-- plan -> steps
---------------------------------------------------------------------------

-- Each step: id (state key), n (1..5), name (operation), body (as planned),
-- wire(body, ctx) fills ids from earlier steps, opts(ctx) gives call options.
local function build_steps(plan)
  local steps = {}
  local function add(s) steps[#steps + 1] = s end

  if plan.user then
    add({ id = "user", n = 1, name = "provision_user", op = "provision_user", body = plan.user })
  end
  if plan.fund then
    add({ id = "fund", n = 2, name = "create_fund", op = "create_fund", body = plan.fund,
      acting_user = true })
  end
  for i, d in ipairs(plan.donations or {}) do
    local kind = type(d) == "table" and d.kind or nil
    local body = copy(d)
    if type(body) == "table" then body.kind = nil end
    add({ id = "donations[" .. i .. "]", n = 3, index = i, kind = kind,
      name = kind == "stock" and "record_stock_donation" or "record_cash_donation",
      op = kind == "stock" and "record_stock_donation" or "record_cash_donation",
      body = body, acting_user = true, keyed = true, fund_field = "receivingFundId" })
  end
  if plan.grant then
    add({ id = "grant", n = 4, name = "submit_grant", op = "submit_grant", body = plan.grant,
      keyed = true, fund_field = "originFundId", destination_account = true })
  end
  for i, o in ipairs(plan.missing_orgs or {}) do
    add({ id = "missing_orgs[" .. i .. "]", n = 5, index = i, name = "report_missing_org",
      op = "report_missing_org", body = o, keyed = true })
  end
  return steps
end

-- Fills the ids that flow from earlier steps, without touching the plan.
local function wire(step, ctx)
  local body = copy(step.body)
  if step.fund_field and body[step.fund_field] == nil then
    body[step.fund_field] = ctx.fund_id
  end
  if step.destination_account and type(body.inboundCustodianTransfer) == "table" and
     body.inboundCustodianTransfer.destinationPartnerAccountIdentifier == nil then
    body.inboundCustodianTransfer.destinationPartnerAccountIdentifier = ctx.fund_account
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
  if plan.fund and plan.fund.partnerAccountIdentifier then
    ctx.fund_account = partner.partner_identifier(plan.fund.partnerAccountIdentifier)
      or plan.fund.partnerAccountIdentifier
  end
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
-- state file
---------------------------------------------------------------------------

local ENOENT = 2

-- nil only when the file does not exist: any other failure (permissions, a
-- directory) must stop the run, or the state would be taken as empty and
-- every keyed step re-sent under new keys.
local function read_file(path)
  local f, msg, code = io.open(path, "rb")
  if not f then
    if code == ENOENT then return nil end
    return false, msg
  end
  local s, rerr = f:read("*a")
  f:close()
  if not s then return false, rerr end
  return s
end

local function identity(plan, client)
  return {
    base_url = client.base_url,
    partnerUserIdentifier = plan.user and partner.partner_identifier(plan.user.partnerUserIdentifier or "")
      or plan.user_id or canonical.null,
    partnerAccountIdentifier = plan.fund and partner.partner_identifier(plan.fund.partnerAccountIdentifier or "")
      or plan.fund_id or canonical.null,
  }
end

local function load_state(path, ident)
  local text, rerr = read_file(path)
  if text == nil then
    return { format = M.FORMAT, identity = ident, steps = {} }
  end
  if text == false then
    return nil, err("config", "cannot read state file " .. path .. " (" .. tostring(rerr) .. "); it was " ..
      "left untouched", { field = "state_file" })
  end
  local st = cjson.decode(text)
  if type(st) ~= "table" or st.format ~= M.FORMAT or type(st.steps) ~= "table" or type(st.identity) ~= "table" then
    return nil, err("config", "state file " .. path .. " is corrupt or not a journey state file; it was " ..
      "left untouched: inspect it, or move it away to start over", { field = "state_file" })
  end
  for _, k in ipairs({ "base_url", "partnerUserIdentifier", "partnerAccountIdentifier" }) do
    local saved, now = st.identity[k], ident[k]
    if saved == cjson.null then saved = nil end
    if now == canonical.null then now = nil end
    if saved ~= now then
      return nil, err("config", string.format("state file %s belongs to another journey (%s %s, this plan " ..
        "has %s); use another state file", path, k, tostring(saved), tostring(now)), { field = "state_file" })
    end
  end
  return st
end

---------------------------------------------------------------------------
-- run
---------------------------------------------------------------------------

local function result_id(res)
  return type(res) == "table" and type(res.id) == "string" and res.id or nil
end

-- A failure the API answered definitively (or that never left): nothing was
-- created under the step's key, so the step may be corrected and re-run.
local function definitive(e)
  if e.kind == "invalid" or e.kind == "config" then return true end
  return e.kind == "http" and not e.retryable and type(e.status) == "number" and e.status >= 400 and e.status < 500
end

local function run(client, plan, opts, state_file, fs)
  local st
  if state_file then
    local e
    st, e = load_state(state_file, identity(plan, client))
    if not st then return nil, e end
  else
    st = { format = M.FORMAT, identity = identity(plan, client), steps = {} }
  end

  local function save()
    if not state_file then return true end
    local okw, werr = fs.write_atomic(state_file, canonical.encode(st))
    if not okw then
      return nil, err("config", "cannot write state file: " .. tostring(werr), { field = "state_file" })
    end
    return true
  end

  local ctx = plan_context(plan, false)
  local result = { donations = {}, missing_orgs = {}, steps = {} }
  local steps = build_steps(plan)

  local function record(step, rec, outcome, elapsed, status)
    local res = rec.result
    if step.id == "user" then
      result.user = res
      ctx.user_id = result_id(res) or ctx.user_id
    elseif step.id == "fund" then
      result.fund = res
      ctx.fund_id = result_id(res) or ctx.fund_id
    elseif step.n == 3 then
      result.donations[step.index] = res
    elseif step.id == "grant" then
      result.grant = res
    else
      result.missing_orgs[step.index] = res
    end
    local info = { n = step.n, total = 5, id = step.id, name = step.name, outcome = outcome,
      result_id = result_id(res), elapsed_ms = elapsed, status = status, idempotency_key = rec.idempotencyKey }
    result.steps[#result.steps + 1] = info
    if opts.on_step then opts.on_step(info) end
  end

  for _, step in ipairs(steps) do
    local fingerprint = canonical.encode(step.body)
    local rec = st.steps[step.id]
    if rec and rec.fingerprint ~= fingerprint then
      if rec.status == "rejected" then
        -- The API refused the old payload: its key created nothing, and the
        -- corrected step gets a key of its own.
        rec = nil
      elseif rec.status == "done" then
        return nil, err("config", step.id .. " is already done with another payload than this plan's; " ..
          "restore the step as it was (a finished step is never sent again)", { field = step.id, step = step.id }),
          result
      else
        return nil, err("config", step.id .. " was sent and its outcome is unknown, so it must be re-sent " ..
          "exactly as it was, with its saved idempotency key: restore the step in the plan and run again. " ..
          "(A new state file would re-send every keyed step under new keys: duplicates.)",
          { field = step.id, step = step.id }), result
      end
    end
    if rec and rec.status == "done" then
      record(step, rec, "skipped", 0, nil)
    else
      if not rec then
        rec = { fingerprint = fingerprint, status = "sent" }
        if step.keyed then
          rec.idempotencyKey = step.body.idempotencyKey or partner.uuid4()
        end
        st.steps[step.id] = rec
      end
      rec.status = "sent"
      -- The key is on disk before the request that carries it leaves.
      local okw, werr = save()
      if not okw then return nil, werr, result end
      local res, cerr, meta = client[step.op](client, wire(step, ctx), call_opts(step, ctx, rec.idempotencyKey))
      if not res then
        cerr.step = step.id
        cerr.rejected = definitive(cerr)
        if cerr.rejected then
          rec.status, rec.error = "rejected", tostring(cerr)
          okw, werr = save()
          if not okw then return nil, werr, result end
        end
        local info = { n = step.n, total = 5, id = step.id, name = step.name, outcome = "failed",
          elapsed_ms = meta and meta.elapsed_ms, status = meta and meta.status, error = cerr,
          idempotency_key = rec.idempotencyKey }
        result.steps[#result.steps + 1] = info
        if opts.on_step then opts.on_step(info) end
        return nil, cerr, result
      end
      rec.status, rec.result, rec.error = "done", res, nil
      okw, werr = save()
      if not okw then return nil, werr, result end
      local replayed = meta.headers and meta.headers["x-idempotent-replayed"] == "true"
      local outcome = replayed and "replayed" or (meta.status == 201 and "created")
        or (meta.status == 200 and "existing") or "ok"
      record(step, rec, outcome, meta.elapsed_ms, meta.status)
    end
  end
  return result
end

function M.run(client, plan, opts)
  opts = opts or {}
  local ok, verr = M.validate(plan)
  if not ok then return nil, verr end
  local state_file = opts.state_file
  if not state_file then return run(client, plan, opts) end
  local fs = require "endaoment.partner.fs"
  -- One run per state file: two runs reading the same state would each make
  -- their own keys for the same steps. The kernel drops the lock if the
  -- process dies, so a killed run never blocks its resume.
  local lock, lerr = fs.lock(state_file .. ".lock")
  if not lock then
    return nil, err("config", "another run is using " .. state_file .. ": " .. tostring(lerr) ..
      "; wait for it to finish (running both would send keyed steps twice)", { field = "state_file" })
  end
  local okr, res, e, partial = pcall(run, client, plan, opts, state_file, fs)
  lock:unlock()
  if not okr then error(res, 0) end   -- e.g. raised by on_step: after unlocking
  return res, e, partial
end
return M
