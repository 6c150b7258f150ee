-- Request handlers for examples/openresty/nginx.conf.
local partner = require "endaoment.partner"
local journey = require "endaoment.partner.journey"
local core = require "endaoment.partner.core"
local cjson = require "cjson.safe"

local M = {}

-- One client per worker, made at load time: it holds no socket between
-- requests (connections wait in nginx's keep-alive pool), so sharing it is safe.
local client

function M.init()
  local env, base_url = os.getenv("ENDAOMENT_ENV"), os.getenv("ENDAOMENT_BASE_URL")
  client = partner.new {
    api_key = os.getenv("ENDAOMENT_API_KEY") or "sandbox-key",
    environment = env ~= "" and env or nil,
    base_url = (not env or env == "") and base_url or nil,   -- no default: name the target
    timeout_ms = 10000, max_retries = 2,
  }
end

-- JSON answers through the SDK's encoder: a list stays a list even when empty
-- (partner.array_mt), which the lua-cjson of Debian's nginx cannot say.
local function encode(doc)
  return core.encode(doc) or cjson.encode(doc)
end

local function reply(status, doc)
  ngx.status = status
  ngx.say(encode(doc))
  return ngx.exit(status)
end

local function read_plan()
  ngx.req.read_body()
  local plan, err = cjson.decode(ngx.req.get_body_data() or "")
  if type(plan) ~= "table" then return nil, "the body must be a JSON plan: " .. tostring(err) end
  return plan
end

local function summary(result, err, partial)
  local steps = setmetatable({}, partner.array_mt)
  for i, s in ipairs((result or partial or {}).steps or {}) do
    steps[i] = { step = s.id, outcome = s.outcome, id = s.result_id }
  end
  return { ok = result ~= nil, error = err and tostring(err), field = err and err.field,
    advice = err and journey.advice(err), steps = steps }
end

-- A plan that breaks a rule is the caller's to fix (400: nothing was sent); any
-- other failure is upstream's (502: run the same request again, it is safe).
local function status_of(err)
  if not err then return 200 end
  return err.kind == "invalid" and 400 or 502
end

-- POST /journey: runs the plan inside this request. No state file (its fsync
-- would block the worker): every key is derived from the plan's own ids
-- (partnerOperationId, partnerFundingTransferId, the user and the step), so a
-- client that retries this request replays the journey instead of doubling it. Each call yields to nginx
-- while it waits for Endaoment, so the worker keeps serving other requests.
function M.journey()
  local plan, perr = read_plan()
  if not plan then return reply(400, { ok = false, error = perr }) end
  local result, err, partial = journey.run(client, plan)
  return reply(status_of(err), summary(result, err, partial))
end

-- POST /journey/background: answers at once; a timer runs the journey. Timers
-- are also where calls made from init_worker or log phases belong.
function M.journey_in_timer()
  local plan, perr = read_plan()
  if not plan then return reply(400, { ok = false, error = perr }) end
  local job = partner.uuid4()
  ngx.shared.journeys:set(job, encode({ state = "running" }), 3600)
  local ok, terr = ngx.timer.at(0, function(premature)
    if premature then return end
    local result, err, partial = journey.run(client, plan)
    local doc = summary(result, err, partial)
    doc.state = "done"
    ngx.shared.journeys:set(job, encode(doc), 3600)
  end)
  if not ok then return reply(503, { ok = false, error = "cannot start a timer: " .. tostring(terr) }) end
  return reply(202, { job = job })
end

-- GET /journey/status?job=<id>
function M.status()
  local doc = ngx.shared.journeys:get(ngx.var.arg_job or "")
  if not doc then return reply(404, { error = "no such job" }) end
  ngx.say(doc)
end

return M
