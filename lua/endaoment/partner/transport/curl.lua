-- Blocking transport over endaoment.partner.curl (libcurl easy interface).
-- A transport is any object with request(req) -> res | nil, err; this one
-- adds sleep(ms) for the retry policy (a real sleep: curl.sleep_ms, nanosleep)
-- and close().
local M = {}

local T = {}
T.__index = T

function M.available()
  local ok, mod = pcall(require, "endaoment.partner.curl")
  return ok, ok and mod or tostring(mod)
end

-- cfg: ca_file, max_response_bytes, proxy, no_proxy (as partner.new checked them).
function M.new(cfg)
  local ok, curl = M.available()
  if not ok then return nil, curl end
  local handle, err = curl.new {
    ca_file = cfg.ca_file,
    max_response_bytes = cfg.max_response_bytes,
    proxy = cfg.proxy,
    no_proxy = cfg.no_proxy,
    allow_http_loopback = true,
  }
  if not handle then return nil, err and err.message end
  return setmetatable({ handle = handle, name = "curl", version = "libcurl/" .. curl.version,
    sleep_ms = curl.sleep_ms }, T)
end

function T:request(req)
  return self.handle:request(req)
end

function T:sleep(ms)
  if ms > 0 then self.sleep_ms(ms) end
end

function T:close()
  self.handle:close()
end

return M
