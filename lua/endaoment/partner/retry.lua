-- Retry policy shared by every transport (blocking, cosocket, async).
-- Money moves through these calls, so the policy is conservative: retry only
-- what cannot have been a deliberate refusal, always with the same body bytes
-- (hence the same idempotency key), and never a 4xx other than 429.
local M = {}

-- The one retryability table, shared by every transport.
-- HTTP answers: retried on these statuses only.
M.RETRYABLE_STATUS = { [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }
-- Transport failures, by the kind the transport reports (the libcurl and the
-- nginx transports report kinds, never their own verdict): a connection that
-- failed or went silent is retried; a TLS failure, an oversize answer, a
-- refused option or out-of-memory is not, and neither is "unknown" (a
-- failure libcurl reported that says nothing about what reached the server:
-- for a payment a duplicate is worse than an error).
M.RETRYABLE_FAILURE = { network = true, timeout = true, tls = false, too_large = false, config = false,
  oom = false, unknown = false }

-- Whether a transport failure may be retried: the table above, unless the
-- transport (a custom one) says so itself with err.retryable.
function M.failure_retryable(err)
  if type(err) ~= "table" then return false end
  if err.retryable ~= nil then return err.retryable == true end
  return M.RETRYABLE_FAILURE[err.kind] == true
end

M.DEFAULTS = {
  max_retries = 2,
  retry_base_ms = 500,
  retry_cap_ms = 8000,
  retry_after_cap_ms = 30000,
}

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
  Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

-- Days from 1970-01-01 to y-m-d (proleptic Gregorian), without os.time's
-- local-time interpretation.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Retry-After: delta-seconds or an HTTP-date (IMF-fixdate). Returns ms to
-- wait, or nil when absent or unreadable.
function M.parse_retry_after(value, now)
  if type(value) ~= "string" then return nil end
  local secs = value:match("^%s*(%d+)%s*$")
  if secs then return tonumber(secs) * 1000 end
  local d, mon, y, h, mi, s = value:match("^%s*%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT%s*$")
  if not d or not MONTHS[mon] then return nil end
  local t = days_from_civil(tonumber(y), MONTHS[mon], tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
  local wait = (t - (now or os.time())) * 1000
  return wait > 0 and wait or 0
end

-- Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))].
function M.backoff_ms(attempt, cfg, random)
  local ceiling = math.min(cfg.retry_cap_ms, cfg.retry_base_ms * 2 ^ (attempt - 1))
  return math.floor((random or math.random)() * ceiling)
end

-- Decides after attempt number `attempt` (1-based). Returns wait_ms to
-- retry, or nil to stop.
function M.decide(attempt, cfg, res, err, random, now)
  if attempt > cfg.max_retries then return nil end
  if res then
    if not M.RETRYABLE_STATUS[res.status] then return nil end
    local ra = M.parse_retry_after(res.headers and res.headers["retry-after"], now)
    if ra then return math.min(ra, cfg.retry_after_cap_ms) end
    return M.backoff_ms(attempt, cfg, random)
  end
  if err and M.failure_retryable(err) then
    return M.backoff_ms(attempt, cfg, random)
  end
  return nil
end

return M
