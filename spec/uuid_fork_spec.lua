-- UUIDs come from a pool of kernel randomness; a fork must never let two
-- processes hand out the same bytes. nginx's workers are forked from the
-- master after init_by_lua, which here makes a UUID (so the master's pool is
-- full when it forks): every worker's UUIDs must differ from the master's
-- and from each other's.
local openresty = require "spec.helpers.openresty"
local core = require "endaoment.partner.core"

local V4 = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

describe("UUIDs across fork()", function()
  it("two forked nginx workers never share the master's pool", function()
    local root = os.getenv("PWD") or "."
    local conf = ([[
master_process on;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path {dir}/tmp/body;
  proxy_temp_path {dir}/tmp/proxy;
  fastcgi_temp_path {dir}/tmp/fastcgi;
  uwsgi_temp_path {dir}/tmp/uwsgi;
  scgi_temp_path {dir}/tmp/scgi;
  lua_package_path "ROOT/lua/?.lua;;";
  lua_package_cpath "ROOT/build/luajit/?.so;;";
  init_by_lua_block {
    local core = require "endaoment.partner.core"
    local f = assert(io.open("{dir}/uuids-master", "w"))
    for _ = 1, 3 do f:write(core.uuid4(), "\n") end
    f:close()
  }
  init_worker_by_lua_block {
    -- Workers run as an unprivileged user: they report through the error log.
    local core = require "endaoment.partner.core"
    for _ = 1, 8 do ngx.log(ngx.WARN, "uuid-from-worker ", ngx.worker.pid(), " ", core.uuid4()) end
  }
  server { listen 127.0.0.1:{port1}; location / { return 200; } }
}
]]):gsub("ROOT", root)
    local ng = assert(openresty.start_conf(conf, 1))
    local lists = { master = {} }
    for line in io.lines(ng.dir .. "/uuids-master") do table.insert(lists.master, line) end
    local deadline = os.time() + 10
    local complete
    repeat
      for k in pairs(lists) do if k ~= "master" then lists[k] = nil end end
      for pid, u in ng.error_log():gmatch("uuid%-from%-worker (%d+) ([%x%-]+)") do
        lists[pid] = lists[pid] or {}
        table.insert(lists[pid], u)
      end
      -- Both workers have logged all their 8.
      complete = 0
      for k, list in pairs(lists) do
        if k ~= "master" and #list == 8 then complete = complete + 1 end
      end
      if complete < 2 then os.execute("sleep 0.05") end
    until complete >= 2 or os.time() > deadline
    local ok, problem = ng.stop()
    assert(ok, problem)
    local seen = {}
    local names = 0
    for name, list in pairs(lists) do
      names = names + 1
      for _, u in ipairs(list) do
        assert.matches(V4, u)
        assert.is_nil(seen[u], "UUID " .. u .. " handed out twice (" .. name .. " and " .. tostring(seen[u]) .. ")")
        seen[u] = name
      end
    end
    assert.equal(3, names, "expected the master and two workers")
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(3 + 2 * 8, n)
  end)

  it("many UUIDs from one process are distinct, strict v4, and the pool refills", function()
    local seen = {}
    for _ = 1, 20000 do
      local u = core.uuid4()
      assert.matches(V4, u)
      assert.is_nil(seen[u])
      seen[u] = true
    end
  end)
end)
