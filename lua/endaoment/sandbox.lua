-- An offline emulator of Endaoment's tech-platform partner API.
--
-- `sandbox.new(opts)` returns an emulator whose `handle(method, path,
-- headers, body)` returns `status, headers, body, transport_fault`. It does
-- no I/O, so the same object serves bin/endaoment-sandbox (luasocket), an
-- nginx `content_by_lua` handler, or a test calling it directly. Behaviour
-- follows ../shared/endaoment-docs/API-NOTES.md; every rule the docs leave
-- open is listed in docs/assumptions.md.
local json = require "endaoment.sandbox.json"
local rules = require "endaoment.sandbox.rules"

local M = { VERSION = "0.1.0" }

local null = json.null
local array = json.array

M.DEFAULT_API_KEY = "sandbox-key"
M.DEFAULT_BEARER_TOKEN = "sandbox-token"
M.MAX_LOG = 10000

-- Seeded nonprofits: real EINs and names, sandbox-only UUIDs.
local SEED_ORGS = {
  { id = "5b6e6b8e-3f0a-4c47-9a51-000000000001", ein = "530196605", name = "American Red Cross",
    website = "https://www.redcross.org", nteeCode = "P20" },
  { id = "5b6e6b8e-3f0a-4c47-9a51-000000000002", ein = "200049703", name = "Wikimedia Foundation",
    website = "https://wikimediafoundation.org", nteeCode = "B60" },
  { id = "5b6e6b8e-3f0a-4c47-9a51-000000000003", ein = "271661997", name = "GiveDirectly",
    website = "https://www.givedirectly.org", nteeCode = "Q33" },
  { id = "5b6e6b8e-3f0a-4c47-9a51-000000000004", ein = "133433452", name = "Doctors Without Borders USA",
    website = "https://www.doctorswithoutborders.org", nteeCode = "Q30" },
}
local SEED_SUBPROJECTS = {
  { id = "5b6e6b8e-3f0a-4c47-9a51-0000000000a1", sponsorOrgId = SEED_ORGS[2].id,
    sponsorOrgEin = SEED_ORGS[2].ein, name = "Wikipedia Library Initiative" },
}
-- Known to the IRS but not onboarded: found by EIN with id null [doc:
-- GET /v1/orgs/ein/{ein} answers id as "uuid | null"].
local SEED_UNONBOARDED = {
  { ein = "521693387", name = "Neighborhood Food Pantry", website = "https://pantry.example.org", nteeCode = "K31" },
  { ein = "941156365", name = "Coastal Cleanup Collective", website = "https://cleanup.example.org", nteeCode = "C20" },
}
M.SEED_ORGS = SEED_ORGS
M.SEED_UNONBOARDED = SEED_UNONBOARDED

local STATUS_TEXT = {
  [200] = "OK", [201] = "Created", [400] = "Bad Request", [401] = "Unauthorized",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [409] = "Conflict", [411] = "Length Required", [413] = "Payload Too Large",
  [415] = "Unsupported Media Type", [422] = "Unprocessable Entity",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}
M.STATUS_TEXT = STATUS_TEXT

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

-- math.random starts from a fixed seed on Lua 5.1-5.3 and LuaJIT, so every
-- run would hand out the same ids: seed it once, from the clock and, when
-- readable, /dev/urandom. Lua 5.4 seeds itself randomly and is left alone.
local random_seeded = _VERSION == "Lua 5.4" and not rawget(_G, "jit")
local function seed_random()
  if random_seeded then return end
  random_seeded = true
  local seed = os.time() + math.floor(os.clock() * 1e6)
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(4)
  if f then f:close() end
  if b and #b == 4 then
    seed = seed + ((b:byte(1) * 256 + b:byte(2)) * 256 + b:byte(3)) * 256 + b:byte(4)
  end
  math.randomseed(seed % 2147483647)     -- 5.1 takes an int
end

local function default_uuid()
  local b = {}
  for i = 1, 16 do b[i] = math.random(0, 255) end
  b[7] = 0x40 + b[7] % 16
  b[9] = 0x80 + b[9] % 64
  return string.format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
    b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16])
end

local function iso(t)
  local s = math.floor(t)
  local ms = math.floor((t - s) * 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%03dZ", ms)
end
M.iso = iso

local function copy(t)
  if type(t) ~= "table" then return t end
  local out = {}
  for k, v in pairs(t) do out[k] = copy(v) end
  return setmetatable(out, getmetatable(t))
end

local JSON_HEADERS = { ["content-type"] = "application/json; charset=utf-8" }

local function reply(status, body)
  return { status = status, body = json.encode(body) }
end

-- NestJS HttpException shape.
local function fail(status, message)
  return reply(status, { statusCode = status, message = message, error = STATUS_TEXT[status] or "Error" })
end

local function lower_headers(h)
  local out = {}
  for k, v in pairs(h or {}) do
    if type(v) == "table" then v = v[1] end
    out[string.lower(k)] = v
  end
  return out
end

local function redact_headers(h)
  local out = {}
  for k, v in pairs(h) do
    if k == "x-api-key" or k == "authorization" then
      out[k] = "[redacted]"
    else
      out[k] = v
    end
  end
  return out
end

---------------------------------------------------------------------------
-- emulator object
---------------------------------------------------------------------------

local Emu = {}
Emu.__index = Emu

local function empty_state()
  return {
    rev = 0,
    users = {}, user_index = {},
    funds = {}, fund_index = {},
    pledges = {},
    submissions = {},
    grants = {},           -- grant transfers by id (partner and OAuth async)
    reports = {}, report_index = {},
    idempotency = {},      -- partnerId:key -> { fingerprint, status, body }
    seq = 0,
  }
end

function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Emu)
  self.now = opts.now or os.time
  if not opts.uuid then seed_random() end
  self.uuid = opts.uuid or default_uuid
  self.controls = opts.controls ~= false
  -- rules = "documented": enforce only documented and example rules (guesses
  -- off); forbid_unknown: refuse fields the schema does not list.
  if opts.rules ~= nil and opts.rules ~= "all" and opts.rules ~= "documented" then
    error("sandbox.new: rules must be \"all\" or \"documented\"", 2)
  end
  self.rule_opts = { documented = opts.rules == "documented", forbid_unknown = opts.forbid_unknown == true }
  self.partners = {}
  local keys = opts.api_keys or { opts.api_key or M.DEFAULT_API_KEY }
  for i, key in ipairs(keys) do
    local p = {
      id = string.format("7e1a0c3d-5b2f-4e6a-8c90-%012d", i),
      name = i == 1 and "Sandbox Partner" or ("Sandbox Partner " .. i),
      api_key = key,
    }
    self.partners[i] = p
  end
  self.bearer = {}
  for _, tok in ipairs(opts.bearer_tokens or { opts.bearer_token or M.DEFAULT_BEARER_TOKEN }) do
    self.bearer[tok] = self.partners[1]
  end
  self.orgs_by_ein, self.orgs_by_id, self.subprojects = {}, {}, {}
  for _, o in ipairs(SEED_ORGS) do
    self.orgs_by_ein[o.ein], self.orgs_by_id[o.id] = o, o
  end
  for _, s in ipairs(SEED_SUBPROJECTS) do self.subprojects[s.id] = s end
  self.state = empty_state()
  self.faults = {}
  self.log = {}
  self.log_seq = 0
  return self
end

-- The persistent part: everything a restart must keep (not faults or log).
function Emu:encode_state()
  return json.encode(self.state)
end

function Emu:load_state(text)
  local st, err = json.decode(text)
  if type(st) ~= "table" or type(st.users) ~= "table" or type(st.funds) ~= "table" then
    return nil, "not a sandbox state file" .. (err and (": " .. err) or "")
  end
  local base = empty_state()
  for k, v in pairs(base) do
    if st[k] == nil then st[k] = v end
  end
  self.state = st
  return true
end

function Emu:revision()
  return self.state.rev
end

function Emu:_mutated()
  self.state.rev = self.state.rev + 1
end

function Emu:_timestamp()
  local t = self.now()
  -- Strictly increasing creation order even within one clock tick.
  self.state.seq = self.state.seq + 1
  return iso(t), self.state.seq
end

---------------------------------------------------------------------------
-- auth and acting user
---------------------------------------------------------------------------

function Emu:_partner_by_key(h)
  local key = h["x-api-key"]
  if not key then return nil end
  for _, p in ipairs(self.partners) do
    if p.api_key == key then return p end
  end
  return nil
end

function Emu:_partner_by_bearer(h)
  local a = h["authorization"]
  local tok = a and a:match("^[Bb]earer%s+(%S+)%s*$")
  return tok and self.bearer[tok] or nil
end

-- allow: "key", "bearer" or "either". Returns partner or nil, response.
function Emu:_auth(h, allow)
  local p
  if allow == "key" or allow == "either" then p = self:_partner_by_key(h) end
  if not p and (allow == "bearer" or allow == "either") then p = self:_partner_by_bearer(h) end
  if p then return p end
  if allow == "bearer" then
    return nil, fail(401, "A valid Authorization: Bearer token is required")
  end
  if h["x-api-key"] then
    return nil, fail(401, "Invalid API key")
  end
  return nil, fail(401, "Missing x-api-key header")
end

function Emu:_user_by_pid(partner, pid)
  local id = self.state.user_index[partner.id .. ":" .. pid]
  return id and self.state.users[id] or nil
end

-- Header x-endaoment-user-id and/or body partnerUserIdentifier.
function Emu:_acting_user(partner, h, pid)
  local hdr_user, body_user
  local hid = h["x-endaoment-user-id"]
  if hid then
    if not rules.is_uuid(hid) then
      return nil, fail(400, { "x-endaoment-user-id must be a UUID" })
    end
    hdr_user = self.state.users[hid:lower()]
    if not hdr_user or hdr_user.partnerId ~= partner.id then
      return nil, fail(404, "User " .. hid .. " not found for this partner")
    end
  end
  if pid then
    body_user = self:_user_by_pid(partner, pid)
    if not body_user then
      return nil, fail(404, "No user with partnerUserIdentifier " .. pid .. " for this partner")
    end
  end
  if hdr_user and body_user and hdr_user.id ~= body_user.id then
    return nil, fail(400, "x-endaoment-user-id and partnerUserIdentifier resolve to different users")
  end
  local u = hdr_user or body_user
  if not u then
    return nil, fail(400, "An acting user is required: send the x-endaoment-user-id header " ..
      "or a partnerUserIdentifier in the body")
  end
  return u
end

function Emu:_fund_of(partner, id)
  local f = self.state.funds[id]
  if not f or f.partnerId ~= partner.id then return nil end
  return f
end

---------------------------------------------------------------------------
-- idempotency on idempotencyKey
---------------------------------------------------------------------------

-- A replay answers exactly what the first request was answered; the same
-- key with another payload is a client bug worth a loud 409.
function Emu:_idempotent(partner, route, cleaned, extra, create)
  local key = partner.id .. ":" .. cleaned.idempotencyKey
  local fp = route .. "\n" .. (extra or "") .. "\n" .. json.encode(cleaned)
  local rec = self.state.idempotency[key]
  if rec then
    if rec.fingerprint ~= fp then
      return fail(409, "idempotencyKey " .. cleaned.idempotencyKey ..
        " was already used for a different request; use a new key for a new operation")
    end
    return { status = rec.replay_status or rec.status, body = rec.body, replayed = true }
  end
  local res = create()
  if res.status < 300 then
    self.state.idempotency[key] = {
      fingerprint = fp, status = res.status, replay_status = res.replay_status, body = res.body,
    }
    self:_mutated()
  end
  return res
end

---------------------------------------------------------------------------
-- representations
---------------------------------------------------------------------------

local function user_view(u)
  return {
    id = u.id, partnerUserIdentifier = u.partnerUserIdentifier, email = u.email,
    techPlatformClientId = u.partnerId, emailVerificationStatus = u.emailVerificationStatus,
    firstName = u.firstName, lastName = u.lastName,
  }
end

local function fund_view(f)
  return {
    id = f.id, name = f.name, type = f.type, description = f.description,
    usdcBalance = f.usdcBalance, lifetimeDonationsUsdc = f.lifetimeDonationsUsdc,
    totalGrantedUsdc = f.totalGrantedUsdc, grantsGiven = f.grantCount,
    createdAtUtc = f.createdAtUtc, updatedAtUtc = f.updatedAtUtc,
    inboundFeeBps = 0, outboundFeeBps = 0, chainId = 1,
  }
end

function Emu:_org_view(id)
  local o = id and self.orgs_by_id[id]
  if not o then return null end
  return { id = o.id, ein = o.ein, name = o.name, website = o.website, nteeCode = o.nteeCode }
end

function Emu:_subproject_view(id)
  local s = id and self.subprojects[id]
  if not s then return null end
  return { id = s.id, sponsorOrgId = s.sponsorOrgId, sponsorOrgEin = s.sponsorOrgEin, name = s.name }
end

function Emu:_grant_view(g)
  return {
    id = g.id, type = "GrantTransfer", status = "Approved", asyncStatus = g.asyncStatus,
    requestedAmount = g.amount, netAmount = null, fee = null, transactionHash = null, chainId = null,
    createdAtUtc = g.createdAtUtc, updatedAtUtc = g.updatedAtUtc,
    destinationOrg = self:_org_view(g.destinationOrgId),
    destinationSubproject = self:_subproject_view(g.destinationSubprojectId),
    recommender = g.recommender or null, purpose = g.purpose or null,
    specialInstructions = g.specialInstructions or null,
    originFundId = g.fundId, grantSubmissionId = g.submissionId or null,
  }
end

---------------------------------------------------------------------------
-- handlers: each gets (ctx) and returns a response table
---------------------------------------------------------------------------

-- Money is int64 micro-dollars in the API: a change that would take a
-- fund's total past it is refused (400) before anything changes.
local INT64_MAX = "9223372036854775807"
local function over_int64(a, b)
  return rules.dec_cmp(rules.dec_add(a, b), INT64_MAX) > 0
end
local function over_int64_reply(what)
  return fail(400, "this would take the fund's " .. what .. " past " .. INT64_MAX ..
    " micro-dollars, the most the API holds")
end

local H = {}

function H.provision_user(self, ctx)
  local p, e = self:_auth(ctx.h, "key")
  if not p then return e end
  local b, errs = rules.validate("provision_user", ctx.body, self.rule_opts)
  if not b then return fail(400, errs) end
  local st = self.state
  local existing = self:_user_by_pid(p, b.partnerUserIdentifier)
  local now = self:_timestamp()
  if existing then
    -- Idempotent: the non-email identity is refreshed, the email kept.
    existing.firstName, existing.lastName, existing.address = b.firstName, b.lastName, b.address
    existing.updatedAtUtc = now
    self:_mutated()
    return reply(200, user_view(existing))
  end
  local u = {
    id = self.uuid(), partnerId = p.id, partnerUserIdentifier = b.partnerUserIdentifier,
    firstName = b.firstName, lastName = b.lastName, email = b.email:lower(), address = b.address,
    emailVerificationStatus = "PENDING", createdAtUtc = now, updatedAtUtc = now,
  }
  st.users[u.id] = u
  st.user_index[p.id .. ":" .. u.partnerUserIdentifier] = u.id
  self:_mutated()
  return reply(201, user_view(u))
end

function H.create_fund(self, ctx)
  local p, e = self:_auth(ctx.h, "either")
  if not p then return e end
  local b, errs = rules.validate("create_fund", ctx.body, self.rule_opts)
  if not b then return fail(400, errs) end
  local user, uerr = self:_acting_user(p, ctx.h, b.partnerUserIdentifier)
  if not user then return uerr end
  local st = self.state
  local idx = p.id .. ":" .. b.partnerAccountIdentifier
  local fid = st.fund_index[idx]
  if fid then
    local f = st.funds[fid]
    if f.userId ~= user.id then
      return fail(409, "partnerAccountIdentifier " .. b.partnerAccountIdentifier ..
        " already names a fund of another user")
    end
    return reply(200, fund_view(f))
  end
  local now = self:_timestamp()
  local f = {
    id = self.uuid(), partnerId = p.id, userId = user.id, name = b.name,
    type = b.type or "Private", description = b.description or b.name,
    partnerAccountIdentifier = b.partnerAccountIdentifier,
    usdcBalance = "0", lifetimeDonationsUsdc = "0", totalGrantedUsdc = "0", grantCount = 0,
    createdAtUtc = now, updatedAtUtc = now,
  }
  st.funds[f.id] = f
  st.fund_index[idx] = f.id
  self:_mutated()
  return reply(201, fund_view(f))
end

local function pledge_handler(schema, amount_field, kind)
  return function(self, ctx)
    local p, e = self:_auth(ctx.h, "key")
    if not p then return e end
    local b, errs = rules.validate(schema, ctx.body, self.rule_opts)
    if not b then return fail(400, errs) end
    local user, uerr = self:_acting_user(p, ctx.h, b.partnerUserIdentifier)
    if not user then return uerr end
    local fund = self:_fund_of(p, b.receivingFundId)
    if not fund then return fail(404, "Fund " .. b.receivingFundId .. " not found") end
    return self:_idempotent(p, kind, b, user.id, function()
      if over_int64(fund.usdcBalance, b[amount_field]) then return over_int64_reply("usdcBalance") end
      if over_int64(fund.lifetimeDonationsUsdc, b[amount_field]) then
        return over_int64_reply("lifetimeDonationsUsdc")
      end
      local now, seq = self:_timestamp()
      local pl = {
        id = self.uuid(), kind = kind, fundId = fund.id, userId = user.id,
        amountMicroDollars = b[amount_field], partnerOperationId = b.partnerOperationId,
        stockPledgeData = b.stockPledgeData, createdAtUtc = now, seq = seq,
      }
      self.state.pledges[pl.id] = pl
      fund.usdcBalance = rules.dec_add(fund.usdcBalance, pl.amountMicroDollars)
      fund.lifetimeDonationsUsdc = rules.dec_add(fund.lifetimeDonationsUsdc, pl.amountMicroDollars)
      fund.updatedAtUtc = now
      return reply(201, { id = pl.id })
    end)
  end
end

H.record_cash_donation = pledge_handler("cash_settled", "pledgedAmountMicroDollars", "cash")
H.record_stock_donation = pledge_handler("stock_settled", "donationValueMicroDollars", "stock")

-- Checks a grant's destination; returns an error message or nil.
-- Whether a rule of schema.state_rules is enforced (guesses are off with
-- rules = "documented").
function Emu:_enforce(rule)
  local r = assert(rules.schema.state_rules[rule], "no state rule " .. rule)
  return not (self.rule_opts.documented and r.provenance == "guess")
end

function Emu:_check_destination(org_id, sub_id, path)
  if not self:_enforce("known_destination") then return nil end
  if org_id and not self.orgs_by_id[org_id] then
    return path .. ".destinationOrgId " .. org_id .. " is not a known organization"
  end
  if sub_id then
    local s = self.subprojects[sub_id]
    if not s then return path .. ".destinationSubprojectId " .. sub_id .. " is not a known subproject" end
    if org_id and s.sponsorOrgId ~= org_id then
      return path .. ".destinationSubprojectId is not sponsored by destinationOrgId"
    end
  end
  return nil
end

function H.submit_grant(self, ctx)
  local p, e = self:_auth(ctx.h, "key")
  if not p then return e end
  local b, errs = rules.validate("grant_submission", ctx.body, self.rule_opts)
  if not b then return fail(400, errs) end
  local ict = b.inboundCustodianTransfer
  local msgs = {}
  for i, g in ipairs(b.grants) do
    if g.destinationOrgId == null then g.destinationOrgId = nil end
    if g.destinationSubprojectId == null then g.destinationSubprojectId = nil end
    local m = self:_check_destination(g.destinationOrgId, g.destinationSubprojectId, "grants." .. (i - 1))
    if m then msgs[#msgs + 1] = m end
  end
  if #msgs > 0 then return fail(400, msgs) end
  local fund = self:_fund_of(p, b.originFundId)
  if not fund then return fail(404, "Fund " .. b.originFundId .. " not found") end
  if self:_enforce("destination_account_matches_fund") and
     ict.destinationPartnerAccountIdentifier ~= fund.partnerAccountIdentifier then
    return fail(400, { "inboundCustodianTransfer.destinationPartnerAccountIdentifier does not match " ..
      "the origin fund's partnerAccountIdentifier" })
  end
  return self:_idempotent(p, "grant_submission", b, nil, function()
    local granted = fund.totalGrantedUsdc
    for _, g in ipairs(b.grants) do granted = rules.dec_add(granted, g.amountMicroDollars) end
    if over_int64(granted, "0") then return over_int64_reply("totalGrantedUsdc") end
    local now, seq = self:_timestamp()
    local sub = {
      id = self.uuid(), partnerId = p.id, originFundId = fund.id, status = "Accepted",
      createdAtUtc = now, seq = seq,
      inboundCustodianTransfer = {
        amountMicroDollars = ict.amountMicroDollars, status = "ReportedSettled",
        partnerFundingTransferId = ict.partnerFundingTransferId,
        sourcePartnerAccountIdentifier = ict.sourcePartnerAccountIdentifier,
        destinationPartnerAccountIdentifier = ict.destinationPartnerAccountIdentifier,
        settledAtUtc = ict.settledAtUtc,
      },
      grants = array(),
    }
    for i, g in ipairs(b.grants) do
      local gt = {
        id = self.uuid(), fundId = fund.id, submissionId = sub.id, amount = g.amountMicroDollars,
        destinationOrgId = g.destinationOrgId, destinationSubprojectId = g.destinationSubprojectId,
        specialInstructions = g.specialInstructions ~= null and g.specialInstructions or nil,
        hideMyInfoFromOrg = g.hideMyInfoFromOrg == true,
        asyncStatus = "PendingLiquidation", createdAtUtc = now, updatedAtUtc = now, seq = seq + i / 100,
      }
      self.state.grants[gt.id] = gt
      sub.grants[i] = {
        asyncGrantTransferId = gt.id, amountMicroDollars = gt.amount,
        hideMyInfoFromOrg = gt.hideMyInfoFromOrg,
        destinationOrgId = gt.destinationOrgId or null,
        destinationSubprojectId = gt.destinationSubprojectId or null,
        specialInstructions = gt.specialInstructions or null,
      }
      fund.totalGrantedUsdc = rules.dec_add(fund.totalGrantedUsdc, gt.amount)
      fund.grantCount = fund.grantCount + 1
    end
    fund.updatedAtUtc = now
    self.state.submissions[sub.id] = sub
    local view = copy(sub)
    view.seq, view.createdAtUtc = nil, nil
    local res = reply(201, view)
    res.replay_status = 200
    return res
  end)
end

function H.report_missing_org(self, ctx)
  local p, e = self:_auth(ctx.h, "key")
  if not p then return e end
  local b, errs = rules.validate("missing_org", ctx.body, self.rule_opts)
  if not b then return fail(400, errs) end
  local st = self.state
  -- The schema is not public: the report is kept as sent. A report of an
  -- EIN already reported is answered with the first one [guess].
  local ein = rules.normalize_ein(b.ein)
  local key = b.idempotencyKey
  if key ~= nil and not rules.is_uuid(key) then return fail(400, { "idempotencyKey must be a UUID" }) end
  local function create()
    local now = self:_timestamp()
    local r = { id = self.uuid(), partnerId = p.id, status = "Pending", createdAtUtc = now }
    -- Fields the public docs do not list are kept as sent.
    for k, v in pairs(ctx.body) do
      if r[k] == nil and k ~= "idempotencyKey" then r[k] = v end
    end
    r.partnerId = p.id
    st.reports[r.id] = r
    if ein then st.report_index[p.id .. ":" .. ein] = r.id end
    local view = copy(r)
    view.partnerId = nil
    local res = reply(201, view)
    res.replay_status = 200
    return res
  end
  if key then
    return self:_idempotent(p, "missing_org", b, nil, create)
  end
  local rid = ein and st.report_index[p.id .. ":" .. ein]
  if rid then
    local view = copy(st.reports[rid])
    view.partnerId = nil
    return reply(200, view)
  end
  local res = create()
  self:_mutated()
  return res
end

function H.create_async_grant(self, ctx)
  local p, e = self:_auth(ctx.h, "bearer")
  if not p then return e end
  local b, errs = rules.validate("async_grant", ctx.body, self.rule_opts)
  if not b then return fail(400, errs) end
  local m = self:_check_destination(b.destinationOrgId, b.destinationSubprojectId, "body")
  if m then return fail(400, { m }) end
  local fund = self:_fund_of(p, b.originFundId)
  if not fund then return fail(404, "Fund " .. b.originFundId .. " not found") end
  return self:_idempotent(p, "async_grant", b, nil, function()
    local pending = "0"
    for _, g in pairs(self.state.grants) do
      if g.fundId == fund.id and g.oauth and g.asyncStatus == "PendingLiquidation" then
        pending = rules.dec_add(pending, g.amount)
      end
    end
    local available = rules.dec_cmp(fund.usdcBalance, pending) > 0
      and rules.dec_sub(fund.usdcBalance, pending) or "0"
    if self:_enforce("async_grant_within_balance") and rules.dec_cmp(b.requestedAmount, available) > 0 then
      return fail(400, "Insufficient fund balance: requested " .. b.requestedAmount ..
        " micro-dollars, available " .. available)
    end
    if over_int64(fund.totalGrantedUsdc, b.requestedAmount) then return over_int64_reply("totalGrantedUsdc") end
    local now, seq = self:_timestamp()
    local g = {
      id = self.uuid(), fundId = fund.id, amount = b.requestedAmount, oauth = true,
      destinationOrgId = b.destinationOrgId, destinationSubprojectId = b.destinationSubprojectId,
      purpose = b.purpose, recommender = b.recommender, specialInstructions = b.specialInstructions,
      asyncStatus = "PendingLiquidation", createdAtUtc = now, updatedAtUtc = now, seq = seq,
    }
    self.state.grants[g.id] = g
    fund.grantCount = fund.grantCount + 1
    fund.totalGrantedUsdc = rules.dec_add(fund.totalGrantedUsdc, g.amount)
    return reply(200, self:_grant_view(g))
  end)
end

function H.cancel_async_grant(self, ctx)
  local p, e = self:_auth(ctx.h, "bearer")
  if not p then return e end
  local id = ctx.params[1]
  if not rules.is_uuid(id) then return fail(400, "Validation failed (uuid is expected)") end
  local g = self.state.grants[id:lower()]
  local fund = g and self:_fund_of(p, g.fundId)
  if not g or not fund or not g.oauth then return fail(404, "Async grant " .. id .. " not found") end
  if g.asyncStatus ~= "PendingLiquidation" then
    return fail(400, "Grant is " .. g.asyncStatus .. "; only PendingLiquidation grants can be cancelled")
  end
  g.asyncStatus = "Cancelled"
  g.updatedAtUtc = self:_timestamp()
  fund.grantCount = fund.grantCount - 1
  fund.totalGrantedUsdc = rules.dec_sub(fund.totalGrantedUsdc, g.amount)
  self:_mutated()
  return reply(200, self:_grant_view(g))
end

-- The reads of one fund: auth, a UUID in the path, a fund of this partner.
function Emu:_path_fund(ctx)
  local p, e = self:_auth(ctx.h, "either")
  if not p then return nil, e end
  local id = ctx.params[1]
  if not rules.is_uuid(id) then return nil, fail(400, "Validation failed (uuid is expected)") end
  local f = self:_fund_of(p, id:lower())
  if not f then return nil, fail(404, "Fund " .. id .. " not found") end
  return f
end

function H.get_fund(self, ctx)
  local f, e = self:_path_fund(ctx)
  if not f then return e end
  return reply(200, fund_view(f))
end

function H.list_fund_grants(self, ctx)
  local f, e = self:_path_fund(ctx)
  if not f then return e end
  local list = {}
  for _, g in pairs(self.state.grants) do
    if g.fundId == f.id then list[#list + 1] = g end
  end
  table.sort(list, function(a, b2) return a.seq > b2.seq end)   -- newest first
  local out = array()
  for i, g in ipairs(list) do out[i] = self:_grant_view(g) end
  return reply(200, out)
end

function H.find_org_by_ein(self, ctx)
  local ein = rules.normalize_ein(ctx.params[1])
  if not ein then return fail(400, "ein must be 9 digits, with or without a hyphen") end
  local o = self.orgs_by_ein[ein]
  if not o then
    for _, u in ipairs(SEED_UNONBOARDED) do
      if u.ein == ein then
        return reply(200, { id = null, ein = u.ein, name = u.name, website = u.website, nteeCode = u.nteeCode })
      end
    end
    return fail(404, "Organization with EIN " .. ctx.params[1] .. " not found")
  end
  return reply(200, self:_org_view(o.id))
end

function Emu._submission_view(_, sub)
  local view = copy(sub)
  view.seq, view.createdAtUtc, view.updatedAtUtc = nil, nil, nil
  return view
end

-- The page [offset, offset + count) of a list.
local function page(list, q, view)
  local out = array()
  local first = (q.offset or 0) + 1
  for i = first, math.min(#list, first + (q.count or rules.schema.DEFAULT_PAGE_COUNT) - 1) do
    out[#out + 1] = view(list[i])
  end
  return out
end

local function matches(term, ...)
  if not term then return true end
  term = term:lower()
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "string" and v:lower():find(term, 1, true) then return true end
  end
  return false
end

function H.search_orgs(_, ctx)
  local q, errs = rules.validate_query("search_orgs", ctx.query)
  if not q then return fail(400, errs) end
  local list = {}
  for _, o in ipairs(SEED_ORGS) do
    if matches(q.searchTerm, o.name, o.ein) then list[#list + 1] = o end
  end
  for _, o in ipairs(SEED_UNONBOARDED) do
    if matches(q.searchTerm, o.name, o.ein) then list[#list + 1] = o end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return reply(200, page(list, q, function(o)
    return { id = o.id or null, ein = o.ein, name = o.name, website = o.website, nteeCode = o.nteeCode }
  end))
end

function H.search_subprojects(self, ctx)
  local q, errs = rules.validate_query("search_subprojects", ctx.query)
  if not q then return fail(400, errs) end
  local list = {}
  for _, s in ipairs(SEED_SUBPROJECTS) do
    if matches(q.searchTerm, s.name) then list[#list + 1] = s end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return reply(200, page(list, q, function(s) return self:_subproject_view(s.id) end))
end

-- A fund's activity, newest first: settled pledges and grants.
function H.fund_activity(self, ctx)
  local f, e = self:_path_fund(ctx)
  if not f then return e end
  local q, errs = rules.validate_query("fund_activity", ctx.query)
  if not q then return fail(400, errs) end
  local list = {}
  for _, pl in pairs(self.state.pledges) do
    if pl.fundId == f.id then
      list[#list + 1] = { seq = pl.seq, item = { type = pl.kind == "stock" and "StockDonationPledge" or
        "CashDonationPledge", id = pl.id, amountMicroDollars = pl.amountMicroDollars,
        partnerOperationId = pl.partnerOperationId, occurredAtUtc = pl.createdAtUtc } }
    end
  end
  for _, g in pairs(self.state.grants) do
    if g.fundId == f.id then
      list[#list + 1] = { seq = g.seq, item = { type = "GrantTransfer", id = g.id, amountMicroDollars = g.amount,
        asyncStatus = g.asyncStatus, destinationOrgId = g.destinationOrgId or null,
        occurredAtUtc = g.createdAtUtc } }
    end
  end
  table.sort(list, function(a, b) return a.seq > b.seq end)
  return reply(200, page(list, q, function(x) return x.item end))
end

function H.whoami(self, ctx)
  local p, e = self:_auth(ctx.h, "either")
  if not p then return e end
  local out = { clientName = p.name, roles = array({ "TechPlatform" }) }
  if not self:_partner_by_key(ctx.h) then out.openIdConnectClientId = "sandbox-oidc-client" end
  return reply(200, out)
end

---------------------------------------------------------------------------
-- test controls under /__sandbox/
---------------------------------------------------------------------------

local FAULT_KEYS = {
  path = "string", method = "string", count = "number", status = "number", retryAfter = "string",
  body = "string", delayMs = "number", drop = "boolean", truncate = "boolean",
  malformed = "boolean", after = "boolean",
}

local function check_fault(f)
  if type(f) ~= "table" then return "a fault must be an object" end
  for k, v in pairs(f) do
    local want = FAULT_KEYS[k]
    if not want then return "unknown fault field " .. tostring(k) end
    if k == "retryAfter" and type(v) == "number" then
      v = v == math.floor(v) and string.format("%d", v) or tostring(v)   -- 2, not "2.0"
      f[k] = v
    end
    if type(v) ~= want then return "fault field " .. k .. " must be a " .. want end
  end
  if not f.path or f.path:sub(1, 1) ~= "/" then return "fault needs a path starting with /" end
  if not (f.status or f.drop or f.truncate or f.malformed or f.delayMs) then
    return "fault needs one of status, drop, truncate, malformed, delayMs"
  end
  if f.status and (f.status < 100 or f.status > 599) then return "fault status must be 100-599" end
  return nil
end

function H.ctl_add_faults(self, ctx)
  local list = ctx.body
  if type(list) ~= "table" then return fail(400, "body must be a fault or a list of faults") end
  if list[1] == nil then list = { list } end
  for _, f in ipairs(list) do
    local m = check_fault(f)
    if m then return fail(400, m) end
  end
  for _, f in ipairs(list) do
    f.count = f.count or 1
    if f.method then f.method = f.method:upper() end
    self.faults[#self.faults + 1] = f
  end
  return reply(201, { queued = #list, pending = #self.faults })
end

function H.ctl_clear_faults(self)
  self.faults = {}
  return reply(200, { pending = 0 })
end

-- The queued faults, in the order they are taken.
function H.ctl_list_faults(self)
  local out = array()
  for i, f in ipairs(self.faults) do out[i] = copy(f) end
  return reply(200, { faults = out })
end

---------------------------------------------------------------------------
-- the request log (API requests only; the controls are not logged)
---------------------------------------------------------------------------

-- Secrets never shown: every configured API key and Bearer token, and what
-- this request presented as one. Shorter strings are left alone (they would
-- blank out ordinary text).
local MIN_SECRET = 4

function Emu:_secrets(h)
  if not self._secret_list then
    local list = {}
    for _, p in ipairs(self.partners) do list[#list + 1] = p.api_key end
    for tok in pairs(self.bearer) do list[#list + 1] = tok end
    self._secret_list = list
  end
  local out = {}
  for i, s in ipairs(self._secret_list) do out[i] = s end
  local key = h["x-api-key"]
  if key then out[#out + 1] = key end
  local tok = h["authorization"] and h["authorization"]:match("^%s*%a+%s+(%S+)")
  if tok then out[#out + 1] = tok end
  return out
end

local function redact_text(s, secrets)
  if type(s) ~= "string" or s == "" then return s end
  for _, secret in ipairs(secrets) do
    if #secret >= MIN_SECRET and s:find(secret, 1, true) then
      local parts, from = {}, 1
      while true do
        local i, j = s:find(secret, from, true)
        if not i then break end
        parts[#parts + 1] = s:sub(from, i - 1)
        parts[#parts + 1] = "[redacted]"
        from = j + 1
      end
      parts[#parts + 1] = s:sub(from)
      s = table.concat(parts)
    end
  end
  return s
end

-- The idempotencyKey of a JSON body, when it has one: read off the text
-- (the emulator's JSON decoder is pure Lua, and this runs on every request),
-- decoded only when the value has escapes.
local function idempotency_key(body)
  if type(body) ~= "string" or not body:find("idempotencyKey", 1, true) then return nil end
  local plain = body:match('^%s*{.-"idempotencyKey"%s*:%s*"([^"\\]*)"')
  if plain then return plain end
  local ok, v = pcall(json.decode, body)
  if ok and type(v) == "table" and type(v.idempotencyKey) == "string" then return v.idempotencyKey end
  return nil
end

-- Starts the log entry of an API request (its answer is added by
-- _log_answer): redacted headers, body and query, the partner whose
-- credentials it carried, its idempotency key. Returns the entry and the
-- secrets to redact from the answer.
function Emu:_log_request(method, path, query, h, body)
  local secrets = self:_secrets(h)
  local headers = redact_headers(h)
  for k, v in pairs(headers) do headers[k] = redact_text(v, secrets) end
  local partner = self:_partner_by_key(h) or self:_partner_by_bearer(h)
  local entry = {
    method = method, path = redact_text(path, secrets), headers = headers,
    body = redact_text(body or "", secrets), time = iso(self.now()),
    query = query and redact_text(query, secrets) or null,
    partnerId = partner and partner.id or null,
    idempotencyKey = idempotency_key(body) or null,
    replayed = false, fault = null,
  }
  self.log_seq = self.log_seq + 1
  entry.seq = self.log_seq
  self.log[#self.log + 1] = entry
  if #self.log > M.MAX_LOG then table.remove(self.log, 1) end
  self.last_entry = entry
  return entry, secrets
end

-- What a fault did, as the log shows it (a copy: the queued one counts down).
local function fault_view(f)
  local v = {}
  for _, k in ipairs({ "status", "retryAfter", "after", "drop", "truncate", "malformed", "delayMs", "body" }) do
    v[k] = f[k]
  end
  return v
end

-- Completes a log entry with the answer: status (0: dropped), response
-- headers and body (redacted), replay flag, fault, and the latency: time in
-- the emulator plus the fault's delay (hosts add their own with add_latency).
function Emu:_log_answer(entry, secrets, t0, status, headers, rbody, fault, replayed)
  entry.status = status
  local rh = {}
  for k, v in pairs(headers or {}) do rh[k] = redact_text(v, secrets) end
  entry.responseHeaders = rh
  entry.responseBody = status == 0 and "" or redact_text(rbody or "", secrets)
  entry.replayed = replayed == true
  entry.fault = fault and fault_view(fault) or null
  local ms = (self.now() - t0) * 1000 + (fault and tonumber(fault.delayMs) or 0)
  entry.latencyMs = math.floor(ms * 10 + 0.5) / 10
end

-- add_latency(ms): a host that delays its answers (--latency-ms) adds the
-- delay to the latency of the request it just handled.
function Emu:add_latency(ms)
  local e = self.last_entry
  if e and e.latencyMs and tonumber(ms) and ms > 0 then
    e.latencyMs = math.floor((e.latencyMs + ms) * 10 + 0.5) / 10
  end
end

local function status_matches(want, status)
  if not want or want == "" then return true end
  local class = want:match("^(%d)[xX][xX]$")
  if class then return math.floor((status or 0) / 100) == tonumber(class) end
  return tonumber(want) == status
end

-- GET /__sandbox/requests[?since=N&limit=N&path=P&pathContains=S&method=M&status=404|4xx&partnerId=ID]
-- -> { requests, cursor, more, epoch, stateRev }. Entries are oldest first;
-- `cursor` is the seq to pass as `since` next time (the log's newest seq
-- once everything was read); `epoch` changes when the log is cleared or the
-- sandbox reset (start again from since=0); `stateRev` is the state's
-- revision (GET /__sandbox/state again when it changes).
function H.ctl_requests(self, ctx)
  local q = ctx.query
  local since = tonumber(q.since) or 0
  local limit = tonumber(q.limit)
  local method = q.method and q.method:upper()
  local out = array()
  local first = #self.log + 1
  while first > 1 and self.log[first - 1].seq > since do first = first - 1 end
  local cursor, more = math.max(since, 0), false
  for i = first, #self.log do
    local r = self.log[i]
    if limit and #out >= limit then more = true; break end
    cursor = r.seq
    if (not q.path or r.path == q.path)
      and (not q.pathContains or r.path:find(q.pathContains, 1, true))
      and (not method or r.method == method)
      and (not q.partnerId or r.partnerId == q.partnerId)
      and status_matches(q.status, r.status) then
      out[#out + 1] = r
    end
  end
  if not more then cursor = math.max(cursor, self.log_seq) end
  return reply(200, { requests = out, cursor = cursor, more = more, epoch = self.log_epoch or 0,
    stateRev = self.state.rev })
end

function H.ctl_clear_requests(self)
  self.log = {}
  self.last_entry = nil
  self.log_epoch = (self.log_epoch or 0) + 1
  return reply(200, { cleared = true })
end

function H.ctl_reset(self)
  self.state = empty_state()
  self:_mutated()
  self.faults, self.log = {}, {}
  self.last_entry = nil
  self.log_epoch = (self.log_epoch or 0) + 1
  return reply(200, { reset = true })
end

-- GET /__sandbox/info: what the dashboard (or a script) needs besides the
-- state: the partners (ids and names, never keys), the seeded nonprofits,
-- the grant submission statuses and the API's operations.
function H.ctl_info(self)
  local partners = array()
  for i, p in ipairs(self.partners) do partners[i] = { id = p.id, name = p.name } end
  local orgs, unonboarded, subprojects, ops = array(), array(), array(), array()
  for i, o in ipairs(SEED_ORGS) do orgs[i] = copy(o) end
  for i, o in ipairs(SEED_UNONBOARDED) do unonboarded[i] = copy(o) end
  for i, s in ipairs(SEED_SUBPROJECTS) do subprojects[i] = copy(s) end
  for _, op in ipairs(rules.schema.OPERATION_ORDER) do
    local spec = rules.schema.operations[op]
    ops[#ops + 1] = { name = op, method = spec.method, path = spec.path }
  end
  return reply(200, {
    version = M.VERSION, partners = partners, orgs = orgs, unonboardedOrgs = unonboarded,
    subprojects = subprojects, grantSubmissionStatuses = array(copy(rules.schema.enums.grant_submission_status)),
    operations = ops, maxLog = M.MAX_LOG,
  })
end

-- GET /__sandbox/ (the dashboard page) and its assets, from
-- endaoment.sandbox.dashboard (loaded on first use).
function H.ctl_dashboard(_, ctx)
  local dashboard = require "endaoment.sandbox.dashboard"
  local asset = dashboard.asset(ctx.params[1] or "index.html")
  if not asset then return fail(404, "Cannot GET " .. ctx.path) end
  return { status = 200, body = asset.body, headers = asset.headers }
end

-- Moves a grant submission through the documented status enum, so partners
-- can test their status handling: { "status": "RedeemQueued" }, or no body
-- for the next status in the enum's order.
function H.ctl_submission_status(self, ctx)
  local id = ctx.params[1]
  local sub = rules.is_uuid(id) and self.state.submissions[id:lower()]
  if not sub then return fail(404, "Grant submission " .. tostring(id) .. " not found") end
  local enum = rules.schema.enums.grant_submission_status
  local want = ctx.body and ctx.body.status
  if want == nil then
    for i, v in ipairs(enum) do
      if v == sub.status then want = enum[i + 1] end
    end
    if not want then return fail(400, "Grant submission is " .. sub.status .. ": no next status") end
  end
  local known = false
  for _, v in ipairs(enum) do if v == want then known = true end end
  if not known then
    return fail(400, "status must be one of the following values: " .. table.concat(enum, ", "))
  end
  sub.status = want
  sub.updatedAtUtc = self:_timestamp()
  self:_mutated()
  return reply(200, self:_submission_view(sub))
end

function H.ctl_state(self)
  return { status = 200, body = self:encode_state() }
end

---------------------------------------------------------------------------
-- routing
---------------------------------------------------------------------------

-- The API's routes come from the one contract: each operation of
-- endaoment.partner.schema is served by the handler of the same name.
local function compile_routes()
  local routes = {}
  for _, op in ipairs(rules.schema.OPERATION_ORDER) do
    local spec = rules.schema.operations[op]
    local handler = assert(H[op], "sandbox: no handler for operation " .. op)
    local pattern = "^" .. spec.path:gsub("[%-%.%+%*%?%[%]%^%$%%]", "%%%0"):gsub("{%w+}", "([^/]+)") .. "$"
    routes[#routes + 1] = { spec.method, pattern, handler, json = spec.body ~= nil, op = op }
  end
  return routes
end
local ROUTES = compile_routes()
M.ROUTES = ROUTES
local CONTROL_ROUTES = {
  { "POST", "^/__sandbox/faults$", H.ctl_add_faults, json = true },
  { "DELETE", "^/__sandbox/faults$", H.ctl_clear_faults },
  { "GET", "^/__sandbox/requests$", H.ctl_requests },
  { "DELETE", "^/__sandbox/requests$", H.ctl_clear_requests },
  { "POST", "^/__sandbox/reset$", H.ctl_reset },
  { "GET", "^/__sandbox/state$", H.ctl_state },
  { "POST", "^/__sandbox/grant%-submissions/([^/]+)/status$", H.ctl_submission_status, json = true },
  { "GET", "^/__sandbox/faults$", H.ctl_list_faults },
  { "GET", "^/__sandbox/info$", H.ctl_info },
  { "GET", "^/__sandbox$", H.ctl_dashboard },
  { "GET", "^/__sandbox/([%w%-]+%.%a+)$", H.ctl_dashboard },
}

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(q)
  local out = {}
  for k, v in (q or ""):gmatch("([^&=]+)=?([^&]*)") do out[unescape(k)] = unescape(v) end
  return out
end

local function match(routes, method, path)
  local path_matched = false
  for _, r in ipairs(routes) do
    local caps = { path:match(r[2]) }
    if caps[1] ~= nil then
      path_matched = true
      if r[1] == method then
        for i, c in ipairs(caps) do caps[i] = unescape(c) end
        if r[2]:find("%(") == nil then caps = {} end
        return r, caps
      end
    end
  end
  return nil, path_matched
end

local function is_json_type(ct)
  return ct ~= nil and ct:lower():match("^%s*application/json") ~= nil
end

-- Picks the first queued fault for this request, consuming one use.
function Emu:_take_fault(method, path)
  for i, f in ipairs(self.faults) do
    if f.path == path and (not f.method or f.method == method) then
      f.count = f.count - 1
      if f.count <= 0 then table.remove(self.faults, i) end
      return f
    end
  end
  return nil
end

local function finish(res)
  local headers = {}
  for k, v in pairs(JSON_HEADERS) do headers[k] = v end
  for k, v in pairs(res.headers or {}) do headers[k] = v end
  return res.status, headers, res.body
end

function Emu:_dispatch(route, params, method, path, query, h, body)
  local ctx = { method = method, path = path, query = query, h = h, params = params }
  if route.json and method ~= "GET" then
    if body ~= nil and body ~= "" and not is_json_type(h["content-type"]) then
      return fail(415, "Content-Type must be application/json")
    end
    if body == nil or body:match("^%s*$") then
      ctx.body = {}
    else
      local v, err = json.decode(body)
      if v == nil then
        return fail(400, "Malformed JSON in request body: " .. tostring(err))
      end
      if type(v) ~= "table" then return fail(400, "Request body must be a JSON object") end
      ctx.body = v
    end
  end
  local ok, res = pcall(route[3], self, ctx)
  if not ok then
    return fail(500, "sandbox internal error: " .. tostring(res))
  end
  return res
end

-- handle(method, path, headers, body) -> status, headers, body, fault
-- `fault`, when not nil, tells the transport what to do beyond sending the
-- answer: { drop = true } (close, send nothing), { truncate = true } (send
-- half the body under the full Content-Length, then close), { delay_ms = n }.
function Emu:handle(method, path, headers, body)
  method = (method or "GET"):upper()
  local h = lower_headers(headers)
  local qpos = path:find("?", 1, true)
  local query = qpos and parse_query(path:sub(qpos + 1)) or {}
  local raw_query = qpos and path:sub(qpos + 1) or nil
  if qpos then path = path:sub(1, qpos - 1) end
  if #path > 1 then path = path:gsub("/$", "") end

  if path == "/__sandbox" or path:sub(1, 11) == "/__sandbox/" then
    if not self.controls then return finish(fail(404, "Cannot " .. method .. " " .. path)) end
    self.last_entry = nil
    local route, params = match(CONTROL_ROUTES, method, path)
    if not route then return finish(fail(404, "Cannot " .. method .. " " .. path)) end
    return finish(self:_dispatch(route, params, method, path, query, h, body))
  end

  local t0 = self.now()
  local entry, secrets = self:_log_request(method, path, raw_query, h, body)

  local fault = self:_take_fault(method, path)
  local res
  if fault and not fault.after and (fault.status or fault.drop) then
    -- The request never reaches the handler.
    if fault.drop then
      self:_log_answer(entry, secrets, t0, 0, {}, "", fault, false)
      return 0, {}, "", { drop = true, delay_ms = fault.delayMs }
    end
    res = fault.body and { status = fault.status, body = fault.body }
      or fail(fault.status, "Injected fault: " .. (STATUS_TEXT[fault.status] or tostring(fault.status)))
  else
    local route, params = match(ROUTES, method, path)
    if route then
      res = self:_dispatch(route, params, method, path, query, h, body)
    else
      res = fail(404, "Cannot " .. method .. " " .. path)
    end
    if fault and fault.status then
      res = fault.body and { status = fault.status, body = fault.body }
        or fail(fault.status, "Injected fault: " .. (STATUS_TEXT[fault.status] or tostring(fault.status)))
    end
  end
  if fault and fault.retryAfter then
    res.headers = { ["retry-after"] = fault.retryAfter }
  end
  if fault and fault.malformed then
    res.body = res.body:sub(1, math.floor(#res.body / 2)) .. "\0<garbage"
  end
  local status, hdrs, rbody = finish(res)
  hdrs["x-request-id"] = self.uuid()
  if res.replayed then hdrs["x-idempotent-replayed"] = "true" end
  local tf
  if fault and (fault.drop or fault.truncate or fault.delayMs) then
    tf = { drop = fault.drop, truncate = fault.truncate, delay_ms = fault.delayMs }
  end
  self:_log_answer(entry, secrets, t0, (fault and fault.drop) and 0 or status, hdrs, rbody, fault, res.replayed)
  return status, hdrs, rbody, tf
end

return M
