/*
 * endaoment.partner.curl multi: the Lua methods of the multi engine
 * (csrc/curl_multi.c), for a game's frame loop or a host's event loop. The
 * async client (lua/endaoment/partner/async.lua) is built on it.
 *
 *   local m = curl.multi{ ca_file=, max_response_bytes=, user_agent=,
 *                         allow_http_loopback=, proxy=, no_proxy=, max_connections= }
 *   local id, err = m:add(req)       -- req as for t:request; never blocks; with a free
 *                                       connection slot libcurl starts it at once
 *   local n, err = m:perform()       -- moves bytes; never blocks;
 *                                       n = transfers added and not yet taken by next()
 *   local id, res = m:next()         -- one finished transfer: id, res | id, nil, err | nil
 *   local n, err = m:wait(ms)        -- blocks up to ms for socket activity, then moves bytes
 *   local ms = m:timeout()           -- 0: call perform now; -1: libcurl set no timer
 *   local fds = m:fds()              -- { {fd=, read=, write=}, ... }: what libcurl watches now
 *   local ok = m:cancel(id)          -- true if id was queued, running or finished-not-taken
 *   local n, running = m:count()
 *   m:close()                        -- also __gc and __close; idempotent
 *
 * A host with its own event loop (libcurl's socket interface):
 *
 *   local list = m:socket_changes()  -- { {fd=, want="r"|"w"|"rw"|"remove"}, ... } since the last call
 *   m:socket_action(fd, "r"|"w"|"rw"|"e"...)  -- fd is ready
 *   m:socket_action()                -- the timer (m:timeout()) is due
 *
 * Descriptors are not limited to FD_SETSIZE anywhere: the engine records
 * them from libcurl's socket callback and waits with poll(2).
 *
 * Re-entry: any allocation may run a __gc finalizer (Lua 5.4, LuaJIT), and a
 * finalizer may call any method of the same handle. So every method finishes
 * its C work before it allocates a Lua value: m:next unlinks the item it
 * returns before pushing it (see l_next); m:fds and m:socket_changes copy what
 * they return into a userdata first; m:add re-checks `closed` after reading
 * the request table, whose __index may run Lua. Lua is never called back from
 * libcurl; the userdata holds no references to Lua values.
 *
 * Threads: one multi handle must not be used from two threads at once.
 */
#include <limits.h>
#include <string.h>

#include "curl_lua.h"
#include "curl_multi.h"

#define MULTI_MT "endaoment.partner.curl.multi"

static ecurl_multi *check_multi(lua_State *L)
{
    return (ecurl_multi *)luaL_checkudata(L, 1, MULTI_MT);
}

static int push_error_kind(lua_State *L, ecurl_kind kind, const char *message)
{
    ecurl_error e;
    ecurl_error_set(&e, kind, -1, "%s", message);
    return ecurl_lua_push_error(L, &e, -1, -1);
}

static int push_mcode_error(lua_State *L, const char *what, CURLMcode mc)
{
    ecurl_error e;
    ecurl_error_set(&e, mc == CURLM_OUT_OF_MEMORY ? ECURL_KIND_OOM : ECURL_KIND_CONFIG, -1, "%s failed: %s",
                    what, curl_multi_strerror(mc));
    return ecurl_lua_push_error(L, &e, -1, -1);
}

static int push_closed(lua_State *L)
{
    return push_error_kind(L, ECURL_KIND_CONFIG, "multi handle is closed");
}

static int l_add(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    ecurl_request req;
    ecurl_error err;
    ecurl_mitem *it;
    int64_t id;
    int base;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (m->closed)
        return push_closed(L);
    /* Everything that can raise happens before the item is allocated. */
    if (ecurl_lua_read_request(L, 2, &req, &base, &err) != 0)
        return ecurl_lua_push_error(L, &err, -1, -1);
    /*
     * Reading ran Lua (__index, finalizers), which may have closed the
     * multi handle; nothing has been allocated yet. After this point no Lua
     * runs until the id is pushed.
     */
    if (m->closed)
        return push_closed(L);

    it = ecurl_multi_item_new();
    if (!it)
        return push_error_kind(L, ECURL_KIND_OOM, "out of memory");
    if (ecurl_lua_begin_request(L, base, &it->tr, &m->cfg, &req, &err) != 0) {
        ecurl_multi_item_free(m, it);
        return ecurl_lua_push_error(L, &err, -1, -1);
    }
    id = ecurl_multi_submit(m, it, req.timeout_ms, req.connect_timeout_ms);
    lua_pushinteger(L, (lua_Integer)id);
    return 1;
}

static lua_Integer in_flight(const ecurl_multi *m)
{
    return (lua_Integer)(m->queued.n + m->running.n + m->done.n);
}

static int l_perform(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    int nready = 0;
    CURLMcode mc;

    if (m->closed)
        return push_closed(L);
    mc = ecurl_multi_drive(m, 0, &nready);
    if (mc != CURLM_OK)
        return push_mcode_error(L, "curl_multi_socket_action", mc);
    lua_pushinteger(L, in_flight(m));
    return 1;
}

/* What l_next hands to push_taken through lua_pcall. */
typedef struct {
    ecurl_mitem *it;
    int failed; /* err holds the failure to push */
    ecurl_error err;
} taken_t;

/* Runs under lua_pcall (see l_next): pushes id, res | id, nil, err. May raise or run finalizers. */
static int push_taken(lua_State *L)
{
    taken_t *tk = (taken_t *)lua_touserdata(L, 1);
    ecurl_transfer *tr = &tk->it->tr;

    lua_pushinteger(L, (lua_Integer)tk->it->id);
    if (tk->failed) {
        if (tk->it->failed)
            return 1 + ecurl_lua_push_error(L, &tk->err, -1, -1);
        return 1 + ecurl_lua_push_error(L, &tk->err, tr->elapsed_ms, tr->sends);
    }
    ecurl_lua_push_response(L, tr);
    return 2;
}

static int l_next(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    taken_t tk;
    int top, rc;

    lua_settop(L, 1);
    /*
     * Unlink first, push after: pushing allocates, and a finalizer run by
     * that allocation may call m:next, m:cancel or m:close. With the item
     * in no list, none of them can reach it; it belongs to this call alone.
     * The push runs protected, so the item is freed here even if it raises
     * (out of memory), and then the error goes on.
     */
    tk.it = ecurl_multi_take_done(m);
    if (!tk.it)
        return 0;
    tk.failed = tk.it->failed;
    if (tk.failed)
        tk.err = tk.it->err;
    else
        tk.failed = ecurl_transfer_error(&tk.it->tr, &m->cfg, &tk.err);

    /* push_taken is an upvalue: pushing it allocates nothing, so nothing runs or raises here. */
    top = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushlightuserdata(L, &tk);
    rc = lua_pcall(L, 1, LUA_MULTRET, 0);
    ecurl_multi_item_free(m, tk.it);
    if (rc != 0)
        return lua_error(L);
    return lua_gettop(L) - top;
}

static int clamp_ms(lua_Number ms)
{
    if (!(ms > 0))
        return 0; /* also NaN */
    if (ms >= (lua_Number)INT_MAX)
        return INT_MAX;
    return (int)ms;
}

static int l_wait(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    int ms = clamp_ms(luaL_checknumber(L, 2));
    int nready = 0;
    CURLMcode mc;

    if (m->closed)
        return push_closed(L);
    mc = ecurl_multi_drive(m, ms, &nready);
    if (mc != CURLM_OK)
        return push_mcode_error(L, "poll", mc);
    lua_pushinteger(L, nready);
    return 1;
}

static int l_timeout(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    long ms;

    if (m->closed)
        ms = -1;
    else if (m->done.n > 0 || (m->queued.n > 0 && (long)m->running.n < m->max_conn))
        ms = 0;
    else
        ms = ecurl_multi_timer_ms(m);
    lua_pushinteger(L, (lua_Integer)ms);
    return 1;
}

static const char *want_name(int want)
{
    switch (want) {
    case ECURL_WANT_READ: return "r";
    case ECURL_WANT_WRITE: return "w";
    case ECURL_WANT_BOTH: return "rw";
    default: return "remove";
    }
}

/*
 * A scratch array of n entries owned by the Lua stack (a userdata), so that
 * nothing leaks if a later push raises. Allocating it may run finalizers
 * that use m: the caller reads m's state only after this returns.
 */
static ecurl_sockchange *scratch(lua_State *L, size_t n)
{
    if (n > ((size_t)-1) / sizeof(ecurl_sockchange))
        luaL_error(L, "too many sockets");
    return (ecurl_sockchange *)lua_newuserdata(L, (n ? n : 1) * sizeof(ecurl_sockchange));
}

static int l_fds(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    ecurl_sockchange *list;
    size_t i, n;

    lua_settop(L, 1);
    if (m->closed) {
        lua_newtable(L);
        return 1;
    }
    n = ecurl_multi_watched_count(m);
    list = scratch(L, n);                  /* 2 */
    n = ecurl_multi_watched(m, list, n); /* after the allocation: what holds now */
    lua_createtable(L, (int)(n < INT_MAX ? n : 0), 0);
    for (i = 0; i < n; i++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, list[i].fd);
        lua_setfield(L, -2, "fd");
        lua_pushboolean(L, (list[i].want & ECURL_WANT_READ) != 0);
        lua_setfield(L, -2, "read");
        lua_pushboolean(L, (list[i].want & ECURL_WANT_WRITE) != 0);
        lua_setfield(L, -2, "write");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int l_socket_changes(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    ecurl_sockchange *list;
    size_t i, n;

    lua_settop(L, 1);
    if (m->closed) {
        lua_newtable(L);
        return 1;
    }
    n = ecurl_multi_changes_bound(m);
    list = scratch(L, n);
    n = m->closed ? 0 : ecurl_multi_changes(m, list, n); /* what did not fit stays for next time */
    lua_createtable(L, (int)(n < INT_MAX ? n : 0), 0);
    for (i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, list[i].fd);
        lua_setfield(L, -2, "fd");
        lua_pushstring(L, want_name(list[i].want));
        lua_setfield(L, -2, "want");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

/* m:socket_action(fd, events) for a ready socket; m:socket_action() when the timer is due. */
static int l_socket_action(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    curl_socket_t fd = CURL_SOCKET_TIMEOUT;
    int ev = 0;
    CURLMcode mc;

    if (!lua_isnoneornil(L, 2)) {
        lua_Integer n = luaL_checkinteger(L, 2);
        const char *e = luaL_optstring(L, 3, "");
        luaL_argcheck(L, n >= 0 && n <= INT_MAX, 2, "a file descriptor expected");
        fd = (curl_socket_t)n;
        for (; *e; e++) {
            if (*e == 'r')
                ev |= CURL_CSELECT_IN;
            else if (*e == 'w')
                ev |= CURL_CSELECT_OUT;
            else if (*e == 'e')
                ev |= CURL_CSELECT_ERR;
        }
    }
    if (m->closed)
        return push_closed(L);
    mc = ecurl_multi_action(m, fd, ev);
    if (mc != CURLM_OK)
        return push_mcode_error(L, "curl_multi_socket_action", mc);
    lua_pushinteger(L, in_flight(m));
    return 1;
}

static int l_cancel(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    lua_Integer id = luaL_checkinteger(L, 2);

    lua_pushboolean(L, ecurl_multi_cancel(m, (int64_t)id));
    return 1;
}

static int l_count(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    lua_pushinteger(L, in_flight(m));
    lua_pushinteger(L, (lua_Integer)m->running.n);
    return 2;
}

static int l_close(lua_State *L)
{
    ecurl_multi_close(check_multi(L));
    return 0;
}

static int l_tostring(lua_State *L)
{
    ecurl_multi *m = check_multi(L);
    lua_pushfstring(L, "endaoment.partner.curl multi (%s, %d in flight): %p", m->closed ? "closed" : "open",
                    (int)in_flight(m), (void *)m);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* curl.multi                                                               */

static int l_multi(lua_State *L)
{
    ecurl_lua_options o;
    ecurl_error err;
    long max_conn = ECURL_MULTI_DEFAULT_CONNECTIONS;
    ecurl_multi *m;
    int top = ECURL_LUA_OPTIONS_TOP;

    /* Every check that can raise runs before anything is allocated. */
    ecurl_lua_read_options(L, "multi", &o);
    lua_getfield(L, 1, "max_connections"); /* top */
    if (!lua_isnil(L, top)) {
        lua_Number n;
        if (lua_type(L, top) != LUA_TNUMBER)
            return luaL_error(L, "bad option 'max_connections' to 'multi' (number expected, got %s)",
                              luaL_typename(L, top));
        n = lua_tonumber(L, top);
        if (!(n >= 1 && n <= ECURL_MULTI_MAX_CONNECTIONS) || n != (lua_Number)(long)n)
            return luaL_error(L, "bad option 'max_connections' to 'multi' (an integer from 1 to %d "
                                 "expected)",
                              ECURL_MULTI_MAX_CONNECTIONS);
        max_conn = (long)n;
    }

    m = (ecurl_multi *)lua_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    luaL_getmetatable(L, MULTI_MT);
    lua_setmetatable(L, -2);

    /* The multi handle shares its DNS and connection caches; TLS sessions need a share. */
    if (ecurl_lua_config_init(&m->cfg, &o, 0, &err) != 0 || ecurl_multi_open(m, max_conn, &err) != 0) {
        ecurl_multi_close(m);
        return ecurl_lua_push_error(L, &err, -1, -1);
    }
    return 1;
}

void ecurl_lua_multi_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "add", l_add },
        { "perform", l_perform }, /* next: below, with an upvalue */
        { "wait", l_wait },
        { "timeout", l_timeout },
        { "fds", l_fds },
        { "socket_changes", l_socket_changes },
        { "socket_action", l_socket_action },
        { "cancel", l_cancel },
        { "count", l_count },
        { "close", l_close },
        { NULL, NULL },
    };
    static const luaL_Reg meta[] = {
        { "__gc", l_close },
        { "__close", l_close },
        { "__tostring", l_tostring },
        { NULL, NULL },
    };

    luaL_newmetatable(L, MULTI_MT);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    /* push_taken as an upvalue: on 5.1 and LuaJIT pushing a C function allocates (and may raise). */
    lua_pushcfunction(L, push_taken);
    lua_pushcclosure(L, l_next, 1);
    lua_setfield(L, -2, "next");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_pushcfunction(L, l_multi);
    lua_setfield(L, -2, "multi");
}
