-- The sandbox emulator mounted in nginx:
--
--   location / { content_by_lua_block { require("endaoment.sandbox.ngx").serve() } }
--
-- State lives in the worker's Lua memory, so run it with worker_processes 1
-- (each worker would otherwise be its own sandbox). Faults from the test
-- controls follow the plan of endaoment.sandbox.faults, as in
-- bin/endaoment-sandbox, applied with nginx's means: ngx.sleep for delays
-- (it yields), ngx.exit(444) to close without an answer or mid-body.
local sandbox = require "endaoment.sandbox"
local faults = require "endaoment.sandbox.faults"

local ngx = rawget(_G, "ngx")

local M = {}

local emu

-- configure(opts): sandbox.new options plus latency_ms; call it from
-- init_by_lua or init_worker_by_lua, or let serve() use the defaults.
function M.configure(opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.now = o.now or function() ngx.update_time(); return ngx.now() end
  if not o.uuid then
    -- Workers fork from one master: a math.random stream would repeat across
    -- them. libuuid's kernel randomness does not.
    local ok, core = pcall(require, "endaoment.partner.core")
    if ok then o.uuid = core.uuid4 end
  end
  M.latency_ms = o.latency_ms or 0
  o.latency_ms = nil
  emu = sandbox.new(o)
  return emu
end

local function read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local file = ngx.req.get_body_file()
  if not file then return nil end
  local f = io.open(file, "rb")
  if not f then return nil end
  body = f:read("*a")
  f:close()
  return body
end

function M.serve()
  if not emu then M.configure() end
  local headers = ngx.req.get_headers(200)
  local status, hdrs, body, fault = emu:handle(ngx.req.get_method(), ngx.var.request_uri, headers, read_body())
  if M.latency_ms > 0 then emu:add_latency(M.latency_ms) end
  local plan = faults.plan(ngx.var.uri, status, hdrs, body, fault, M.latency_ms)
  if plan.delay_ms > 0 then ngx.sleep(plan.delay_ms / 1000) end
  if plan.drop then return ngx.exit(444) end
  ngx.status = plan.status
  for k, v in pairs(plan.headers) do ngx.header[k] = v end
  ngx.header["content-length"] = plan.content_length
  ngx.print(faults.sent_body(plan))
  if plan.close then
    ngx.flush(true)
    return ngx.exit(444)
  end
end

function M.emulator()
  return emu
end

return M
