-- Blocking transport over endaoment.partner.curl (libcurl easy interface).
-- A transport is any object with request(req) -> res | nil, err; this one
-- adds sleep(ms) for the retry policy and close().
local M = {}

local T = {}
T.__index = T

local sleeper
local function default_sleep(ms)
  if not sleeper then
    local curl = require "endaoment.partner.curl"
    if curl.sleep_ms then
      sleeper = curl.sleep_ms
    else
      local socket = require "socket"
      sleeper = function(n) socket.sleep(n / 1000) end
    end
  end
  if ms > 0 then sleeper(ms) end
end

function M.available()
  local ok, mod = pcall(require, "endaoment.partner.curl")
  return ok, ok and mod or tostring(mod)
end

function M.new(cfg)
  local ok, curl = M.available()
  if not ok then return nil, curl end
  local handle = curl.new {
    ca_file = cfg.ca_file,
    max_response_bytes = cfg.max_response_bytes,
    user_agent = cfg.user_agent,
    allow_http_loopback = true,
  }
  return setmetatable({ handle = handle, name = "curl", version = "libcurl/" .. curl.version }, T)
end

function T:request(req)
  return self.handle:request(req)
end

function T.sleep(_, ms)
  default_sleep(ms)
end

function T:close()
  self.handle:close()
end

return M
