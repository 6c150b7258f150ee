-- What each err.kind means and what to do about it.
--
-- Run it from anywhere, with the SDK on the package paths (in a checkout: make, then
-- eval "$(make -s env)"; or installed with LuaRocks), against a sandbox started first
-- (bin/endaoment-sandbox --port 8787):
--
--   lua5.4 examples/error_handling.lua http://127.0.0.1:8787
local partner = require "endaoment.partner"
local client = partner.new { api_key = "sandbox-key", base_url = arg[1] or "http://127.0.0.1:8787" }

local ADVICE = {
  invalid = "your input broke a rule; nothing was sent. Fix err.field and call again.",
  config = "the client or call is misconfigured (missing token, bad state file). Fix the setup.",
  http = "the API answered non-2xx. err.status and err.messages say why; retry only if err.retryable.",
  network = "the connection failed. The client already retried; resending the same body later is safe: " ..
    "its idempotency key is derived from your partnerOperationId (or give meta.idempotency_key back).",
  timeout = "no answer in time. The request may have been processed: retry with the same key, never a new one.",
  tls = "certificate verification failed. Fix the trust store (ca_file); never turn verification off.",
  decode = "the API answered 2xx with a body that is not JSON. Retry with the same key to read the stored answer.",
}

-- The key matters only when the request may have reached the API.
local function report(what, res, err, meta)
  if res then print(what, "ok") return end
  print(string.format("%-28s kind=%-8s %s", what, err.kind, tostring(err)))
  print(string.rep(" ", 29) .. ADVICE[err.kind])
  if meta and meta.idempotency_key and (err.kind == "network" or err.kind == "timeout" or err.kind == "decode") then
    print(string.rep(" ", 29) .. "idempotency key to reuse: " .. meta.idempotency_key)
  end
end

-- invalid: a float amount is refused before anything is sent
report("float amount", client:record_cash_donation({ receivingFundId = partner.uuid4(),
  pledgedAmountMicroDollars = "12.5", partnerOperationId = "x" }))
-- http 404: a fund that does not exist
report("unknown fund", client:get_fund(partner.uuid4()))
-- http 400: no acting user for a fund
report("fund without acting user",
  client:create_fund({ name = "F", partnerAccountIdentifier = "acct-000000000000001" }))
-- config: an async grant needs a Bearer token
report("async grant without token", client:create_async_grant({ originFundId = partner.uuid4(),
  destinationOrgId = partner.uuid4(), requestedAmount = "1000000", purpose = "Relief" }))
-- network: nothing listens on this port
local offline = partner.new { api_key = "k", base_url = "http://127.0.0.1:9", max_retries = 0 }
report("server down", offline:whoami())
client:close()
offline:close()
