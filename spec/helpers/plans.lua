-- Deterministic journey plans for the fleet specs and the journey benchmark.
--
--   local plans = require "spec.helpers.plans"
--   local list = plans.list(200, { prefix = "pg" })            -- plan tables, index 1..n
--   local list = plans.write("/tmp/b.jsonl", 200, { prefix = "pg" })  -- one JSON plan per line
--   local want = plans.expected(list)                         -- what the API must hold afterwards
--
-- Plan i has a user, a fund, two cash donations (unique partnerOperationIds),
-- one grant (a unique partnerFundingTransferId) and, every report_every-th
-- plan (10 by default; 1 = every plan), one missing_orgs report with a
-- unique 9-digit EIN. The same (i, opts) always gives the same plan, byte
-- for byte, so a batch file written twice is the same file. Amounts vary
-- with i, so a pledge recorded on the wrong fund shows up in its balance.
local cjson = require "cjson"

local M = {}

M.RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"
M.UNKNOWN_ORG = "5b6e6b8e-3f0a-4c47-9a51-0000000000ff"

-- Every identifier of plan i (prefix: 1-12 characters, [%w-]).
local function ids(i, prefix)
  return {
    user = string.format("%s-user-%010d", prefix, i),
    account = string.format("%s-acct-%010d", prefix, i),
    op1 = string.format("%s-op-%08d-1", prefix, i),
    op2 = string.format("%s-op-%08d-2", prefix, i),
    xfer = string.format("%s-xfer-%08d", prefix, i),
  }
end

-- Micro-dollar strings: integers only (never a float), different per plan.
local function amounts(i)
  local d1 = (1000 + (i * 7919) % 9000) * 10000        -- $10.00 .. $99.99
  local d2 = (100 + (i * 104729) % 900) * 10000        -- $1.00 .. $9.99
  local grant = d1                                     -- never more than was donated
  return tostring(d1), tostring(d2), tostring(grant)
end

-- Plan i. opts: prefix ("fleet"), report_every (10; 0 = none), ein_base
-- (900000000: EIN of report k is ein_base + i, so 9 digits while i < 10^8).
function M.plan(i, opts)
  opts = opts or {}
  local prefix = opts.prefix or "fleet"
  assert(type(prefix) == "string" and prefix:match("^[%w-]+$") and #prefix <= 12,
    "prefix: 1-12 characters of [A-Za-z0-9-]")
  local every = opts.report_every == nil and 10 or opts.report_every
  local id = ids(i, prefix)
  local d1, d2, g = amounts(i)
  local plan = {
    user = { partnerUserIdentifier = id.user, firstName = "Ada", lastName = "Lovelace " .. i,
      email = string.format("ada.%d@example.com", i),
      address = { line1 = i .. " Main St", city = "New York", state = "NY", zip = "10001", country = "USA" } },
    fund = { name = "DAF " .. prefix .. " " .. i, partnerAccountIdentifier = id.account },
    donations = {
      { kind = "cash", pledgedAmountMicroDollars = d1, partnerOperationId = id.op1 },
      { kind = "cash", pledgedAmountMicroDollars = d2, partnerOperationId = id.op2 },
    },
    grant = {
      inboundCustodianTransfer = { amountMicroDollars = g, partnerFundingTransferId = id.xfer,
        sourcePartnerAccountIdentifier = "omnibus-account-00001", destinationPartnerAccountIdentifier = id.account,
        settledAtUtc = "2026-05-04T14:32:01.000Z" },
      grants = { { amountMicroDollars = g, destinationOrgId = opts.destination or M.RED_CROSS } },
    },
  }
  if every > 0 and i % every == 0 then
    local ein = string.format("%09d", (opts.ein_base or 900000000) + i)
    assert(#ein == 9, "EIN overflow: plan index too large for ein_base")
    plan.missing_orgs = { { name = "Community Org " .. prefix .. " " .. i, ein = ein,
      website = "https://org" .. i .. ".example.org" } }
  end
  return plan
end

-- Plans first .. first + n - 1 (first = opts.first or 1), as a list.
function M.list(n, opts)
  opts = opts or {}
  local first = opts.first or 1
  local out = {}
  for k = 1, n do out[k] = M.plan(first + k - 1, opts) end
  return out
end

-- One JSON line per plan, in a stable key order so the file is byte-for-byte
-- reproducible (cjson's order follows the table's hash layout).
local function encode(v)
  if type(v) ~= "table" then return cjson.encode(v) end
  if #v > 0 or next(v) == nil then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = encode(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. encode(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end
M.encode = encode

-- Writes n plans (or the given list) to path; returns the list.
function M.write(path, n_or_list, opts)
  local list = type(n_or_list) == "table" and n_or_list or M.list(n_or_list, opts)
  local f = assert(io.open(path, "wb"))
  for _, p in ipairs(list) do f:write(encode(p), "\n") end
  assert(f:close())
  return list
end

-- What the API must hold once every plan ran exactly once:
--   users[partnerUserIdentifier] = true, funds[partnerAccountIdentifier] = sum of its donations,
--   fund_user[account] = partnerUserIdentifier, fund_granted[account] = its grant's amount,
--   pledges[partnerOperationId] = amount, pledge_fund[partnerOperationId] = account,
--   grants[partnerFundingTransferId] = amount, grant_fund[partnerFundingTransferId] = account,
--   reports[ein] = true, and the counts n_users, n_funds, n_pledges, n_grants, n_reports.
function M.expected(list)
  local w = { users = {}, funds = {}, fund_user = {}, fund_granted = {}, pledges = {}, pledge_fund = {},
    grants = {}, grant_fund = {}, reports = {}, n_users = 0, n_funds = 0, n_pledges = 0, n_grants = 0,
    n_reports = 0 }
  for _, p in ipairs(list) do
    w.users[p.user.partnerUserIdentifier] = true
    w.n_users = w.n_users + 1
    local sum = 0
    for _, d in ipairs(p.donations) do
      w.pledges[d.partnerOperationId] = d.pledgedAmountMicroDollars
      w.pledge_fund[d.partnerOperationId] = p.fund.partnerAccountIdentifier
      w.n_pledges = w.n_pledges + 1
      sum = sum + tonumber(d.pledgedAmountMicroDollars)   -- < 2^53: exact as a float too (Lua 5.1)
    end
    w.funds[p.fund.partnerAccountIdentifier] = string.format("%.0f", sum)
    w.fund_user[p.fund.partnerAccountIdentifier] = p.user.partnerUserIdentifier
    w.n_funds = w.n_funds + 1
    local ict = p.grant.inboundCustodianTransfer
    w.grants[ict.partnerFundingTransferId] = ict.amountMicroDollars
    w.grant_fund[ict.partnerFundingTransferId] = p.fund.partnerAccountIdentifier
    w.fund_granted[p.fund.partnerAccountIdentifier] = ict.amountMicroDollars
    w.n_grants = w.n_grants + 1
    for _, o in ipairs(p.missing_orgs or {}) do
      w.reports[o.ein] = true
      w.n_reports = w.n_reports + 1
    end
  end
  return w
end

-- Requests the plans send when every step runs once: user, fund, two
-- donations, grant, and their reports.
function M.requests(list)
  local n = 0
  for _, p in ipairs(list) do n = n + 5 + #(p.missing_orgs or {}) end
  return n
end

return M
