/*
 * endaoment.partner.curl multi: many requests at once on one libcurl multi
 * handle, driven by the caller (a game's frame loop, a host's event loop).
 * The async client (lua/endaoment/partner/async.lua) is built on it.
 *
 *   local m = curl.multi{ ca_file=, max_response_bytes=, user_agent=,
 *                         allow_http_loopback=, max_connections= }
 *   local id, err = m:add(req)       -- req as for t:request; never blocks
 *   local n, err = m:perform()       -- moves bytes (curl_multi_perform); never blocks;
 *                                       n = transfers added and not yet taken by next()
 *   local id, res = m:next()         -- one finished transfer: id, res | id, nil, err | nil
 *   local n, err = m:wait(ms)        -- curl_multi_poll: blocks up to ms for socket activity
 *   local ms = m:timeout()           -- curl_multi_timeout (0: call perform now, -1: none set)
 *   local fds = m:fds()              -- { {fd=, read=, write=}, ... } (curl_multi_fdset)
 *   local ok = m:cancel(id)          -- true if id was queued, running or finished-not-taken
 *   local n, running = m:count()
 *   m:close()                        -- also __gc and __close; idempotent
 *
 * Options are those of curl.new plus max_connections (default 16). At most
 * max_connections transfers are inside the multi handle at once; more wait in
 * a queue here, so that CURLOPT_TIMEOUT_MS counts from the moment a transfer
 * really starts (in libcurl's own queue the wait would count against it).
 * CURLMOPT_MAX_TOTAL_CONNECTIONS and CURLMOPT_MAXCONNECTS are set to the same
 * number: connections are kept alive and reused across requests.
 *
 * No Lua runs while libcurl runs: the libcurl callbacks (curl_transfer.c)
 * fill C buffers, and results become Lua values in m:next().
 *
 * Re-entry: any allocation may run a __gc finalizer (Lua 5.4, LuaJIT), and a
 * finalizer may call any method of the same handle. So every method finishes
 * its C work on lists and items before it allocates a Lua value, and m:next
 * unlinks the item it returns before pushing it (see l_next); m:add re-checks
 * `closed` after reading the request table, whose __index may run Lua. Every item,
 * easy handle, the share and the multi handle belong to the userdata and are
 * freed by next, cancel, close or __gc. Lua is never called back from here;
 * the userdata holds no references to Lua values.
 *
 * Threads: one multi handle must not be used from two threads at once.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include "compat.h"
#include "curl_transfer.h"

#define MULTI_MT "endaoment.partner.curl.multi"
#define DEFAULT_MAX_CONNECTIONS 16
/* curl_multi_fdset reports descriptors below FD_SETSIZE only; stay well under it. */
#define MAX_CONNECTIONS_LIMIT 512
/* perform + refill rounds in one m:perform(): a slot freed by a finished transfer is reused at once. */
#define PERFORM_ROUNDS 4

typedef struct mitem {
    ecurl_transfer tr; /* first member: CURLOPT_PRIVATE points at it, and so at the item */
    struct mitem *prev;
    struct mitem *next;
    lua_Integer id;
    long timeout_ms;
    long connect_timeout_ms;
    int in_multi; /* added to the multi handle and not removed yet */
    int failed;   /* err holds a failure found before libcurl ran */
    ecurl_error err;
} mitem;

typedef struct {
    mitem *head;
    mitem *tail;
    size_t n;
} mlist;

typedef struct {
    CURLM *multi;
    ecurl_config cfg; /* owned: see ecurl_config_init */
    long max_conn;
    mlist queued;  /* begun, waiting for a free slot */
    mlist running; /* inside the multi handle */
    mlist done;    /* finished, waiting for m:next() */
    CURL **spare;  /* reset easy handles kept for the next transfers */
    size_t nspare;
    lua_Integer next_id;
    int closed;
} multi_t;

/* ------------------------------------------------------------------------ */
/* lists                                                                    */

static void list_push(mlist *l, mitem *it)
{
    it->next = NULL;
    it->prev = l->tail;
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    l->n++;
}

static void list_unlink(mlist *l, mitem *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else
        l->head = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        l->tail = it->prev;
    it->prev = it->next = NULL;
    l->n--;
}

static mitem *list_find(const mlist *l, lua_Integer id)
{
    mitem *it;
    for (it = l->head; it; it = it->next) {
        if (it->id == id)
            return it;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* items and easy handles                                                   */

/* Takes the item's easy handle out of the multi handle and keeps it for reuse (or frees it). */
static void retire_easy(multi_t *m, mitem *it)
{
    CURL *easy;
    if (it->in_multi && it->tr.easy)
        curl_multi_remove_handle(m->multi, it->tr.easy);
    it->in_multi = 0;
    easy = ecurl_transfer_detach(&it->tr);
    if (!easy)
        return;
    if (!m->closed && m->nspare < (size_t)m->max_conn)
        m->spare[m->nspare++] = easy;
    else
        curl_easy_cleanup(easy);
}

static void free_item(multi_t *m, mitem *it)
{
    retire_easy(m, it);
    ecurl_transfer_release(&it->tr);
    free(it);
}

static void fail_item(multi_t *m, mitem *it)
{
    it->failed = 1;
    retire_easy(m, it);
    list_push(&m->done, it);
}

/* Moves queued transfers into the multi handle while there is a free slot; returns how many. */
static int start_queued(multi_t *m)
{
    int started = 0;

    while (m->queued.head && (long)m->running.n < m->max_conn) {
        mitem *it = m->queued.head;
        ecurl_request req;
        CURLMcode mc;
        CURL *easy;

        list_unlink(&m->queued, it);
        easy = m->nspare > 0 ? m->spare[--m->nspare] : curl_easy_init();
        if (!easy) {
            ecurl_error_set(&it->err, ECURL_KIND_OOM, 0, -1, "cannot create a libcurl easy handle");
            fail_item(m, it);
            continue;
        }
        memset(&req, 0, sizeof req);
        req.timeout_ms = it->timeout_ms;
        req.connect_timeout_ms = it->connect_timeout_ms;
        if (ecurl_transfer_setup(&it->tr, easy, &m->cfg, &req, &it->err) != 0) {
            /* setup may fail before it takes the handle: make it ours to retire either way */
            it->tr.easy = easy;
            fail_item(m, it);
            continue;
        }
        mc = curl_multi_add_handle(m->multi, easy);
        if (mc != CURLM_OK) {
            ecurl_error_set(&it->err, mc == CURLM_OUT_OF_MEMORY ? ECURL_KIND_OOM : ECURL_KIND_CONFIG,
                            0, -1, "cannot start the transfer: %s", curl_multi_strerror(mc));
            fail_item(m, it);
            continue;
        }
        it->in_multi = 1;
        list_push(&m->running, it);
        started++;
    }
    return started;
}

/* Moves every transfer libcurl reports finished from running to done. */
static void collect(multi_t *m)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        /* msg does not survive curl_multi_remove_handle: copy what we need first */
        CURL *easy = msg->easy_handle;
        CURLcode code = msg->data.result;
        char *priv = NULL;
        mitem *it;

        if (msg->msg != CURLMSG_DONE)
            continue;
        if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) != CURLE_OK || priv == NULL)
            continue; /* not one of ours: cannot happen */
        it = (mitem *)(void *)priv;
        ecurl_transfer_complete(&it->tr, code);
        retire_easy(m, it);
        list_unlink(&m->running, it);
        list_push(&m->done, it);
    }
}

static void free_list(multi_t *m, mlist *l)
{
    while (l->head) {
        mitem *it = l->head;
        list_unlink(l, it);
        free_item(m, it);
    }
}

static void multi_close(multi_t *m)
{
    size_t i;

    if (m->closed)
        return;
    m->closed = 1;
    /* Easy handles leave the multi handle first, then are cleaned up; the multi, then the share, last. */
    free_list(m, &m->running);
    free_list(m, &m->queued);
    free_list(m, &m->done);
    for (i = 0; i < m->nspare; i++)
        curl_easy_cleanup(m->spare[i]);
    m->nspare = 0;
    free(m->spare);
    m->spare = NULL;
    if (m->multi) {
        curl_multi_cleanup(m->multi);
        m->multi = NULL;
    }
    ecurl_config_release(&m->cfg);
}

/* ------------------------------------------------------------------------ */
/* Lua methods                                                              */

static multi_t *check_multi(lua_State *L)
{
    return (multi_t *)luaL_checkudata(L, 1, MULTI_MT);
}

static int push_error_kind(lua_State *L, ecurl_kind kind, const char *message)
{
    ecurl_error e;
    ecurl_error_set(&e, kind, 0, -1, "%s", message);
    return ecurl_lua_push_error(L, &e, -1);
}

static int push_mcode_error(lua_State *L, const char *what, CURLMcode mc)
{
    ecurl_error e;
    ecurl_error_set(&e, mc == CURLM_OUT_OF_MEMORY ? ECURL_KIND_OOM : ECURL_KIND_CONFIG, 0, -1,
                    "%s failed: %s", what, curl_multi_strerror(mc));
    return ecurl_lua_push_error(L, &e, -1);
}

static int l_add(lua_State *L)
{
    multi_t *m = check_multi(L);
    ecurl_request req;
    ecurl_error err;
    lua_Integer id;
    mitem *it;
    int base;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (m->closed)
        return push_error_kind(L, ECURL_KIND_CONFIG, "multi handle is closed");
    /* Everything that can raise happens before the item is allocated. */
    if (ecurl_lua_read_request(L, 2, &req, &base, &err) != 0)
        return ecurl_lua_push_error(L, &err, -1);
    /*
     * Reading ran Lua (__index, finalizers), which may have closed the
     * multi handle; nothing has been allocated yet. After this point no Lua
     * runs until the id is pushed.
     */
    if (m->closed)
        return push_error_kind(L, ECURL_KIND_CONFIG, "multi handle is closed");

    it = (mitem *)calloc(1, sizeof *it);
    if (!it)
        return push_error_kind(L, ECURL_KIND_OOM, "out of memory");
    ecurl_transfer_init(&it->tr);
    if (ecurl_lua_begin_request(L, base, &it->tr, &m->cfg, &req, &err) != 0) {
        free_item(m, it);
        return ecurl_lua_push_error(L, &err, -1);
    }
    it->timeout_ms = req.timeout_ms;
    it->connect_timeout_ms = req.connect_timeout_ms;
    id = it->id = ++m->next_id;
    list_push(&m->queued, it);
    start_queued(m);
    lua_pushinteger(L, id);
    return 1;
}

static int l_perform(lua_State *L)
{
    multi_t *m = check_multi(L);
    int round, running = 0;

    if (m->closed)
        return push_error_kind(L, ECURL_KIND_CONFIG, "multi handle is closed");
    start_queued(m);
    for (round = 0; round < PERFORM_ROUNDS; round++) {
        CURLMcode mc = curl_multi_perform(m->multi, &running);
        if (mc != CURLM_OK)
            return push_mcode_error(L, "curl_multi_perform", mc);
        collect(m);
        if (start_queued(m) == 0)
            break;
    }
    lua_pushinteger(L, (lua_Integer)(m->queued.n + m->running.n + m->done.n));
    return 1;
}

/* What l_next hands to push_taken through lua_pcall. */
typedef struct {
    mitem *it;
    int failed; /* err holds the failure to push */
    ecurl_error err;
} taken_t;

/* Runs under lua_pcall (see l_next): pushes id, res | id, nil, err. May raise or run finalizers. */
static int push_taken(lua_State *L)
{
    taken_t *tk = (taken_t *)lua_touserdata(L, 1);

    lua_pushinteger(L, tk->it->id);
    if (tk->failed)
        return 1 + ecurl_lua_push_error(L, &tk->err, tk->it->failed ? -1 : tk->it->tr.elapsed_ms);
    ecurl_lua_push_response(L, &tk->it->tr);
    return 2;
}

static int l_next(lua_State *L)
{
    multi_t *m = check_multi(L);
    taken_t tk;
    int top, rc;

    lua_settop(L, 1);
    if (m->closed || !m->done.head)
        return 0;

    /*
     * Unlink first, push after: pushing allocates, and a finalizer run by
     * that allocation may call m:next, m:cancel or m:close. With the item
     * in no list, none of them can reach it; it belongs to this call alone.
     * The push runs protected, so the item is freed here even if it raises
     * (out of memory), and then the error goes on.
     */
    tk.it = m->done.head;
    list_unlink(&m->done, tk.it);
    tk.failed = tk.it->failed;
    if (tk.failed) {
        tk.err = tk.it->err;
    } else {
        tk.failed = ecurl_transfer_error(&tk.it->tr, &m->cfg, &tk.err);
    }

    /* push_taken is an upvalue: pushing it allocates nothing, so nothing runs or raises here. */
    top = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushlightuserdata(L, &tk);
    rc = lua_pcall(L, 1, LUA_MULTRET, 0);
    free_item(m, tk.it);
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
    multi_t *m = check_multi(L);
    int ms = clamp_ms(luaL_checknumber(L, 2));
    int numfds = 0;
    CURLMcode mc;

    if (m->closed)
        return push_error_kind(L, ECURL_KIND_CONFIG, "multi handle is closed");
    if (m->done.n > 0)
        ms = 0; /* a result is waiting: never block */
#if LIBCURL_VERSION_NUM >= 0x074200
    mc = curl_multi_poll(m->multi, NULL, 0, ms, &numfds);
#else
    mc = curl_multi_wait(m->multi, NULL, 0, ms, &numfds);
#endif
    if (mc != CURLM_OK)
        return push_mcode_error(L, "curl_multi_poll", mc);
    lua_pushinteger(L, numfds);
    return 1;
}

static int l_timeout(lua_State *L)
{
    multi_t *m = check_multi(L);
    long ms = -1;

    if (m->closed) {
        lua_pushinteger(L, -1);
        return 1;
    }
    if (m->done.n > 0 || (m->queued.n > 0 && (long)m->running.n < m->max_conn)) {
        ms = 0;
    } else if (curl_multi_timeout(m->multi, &ms) != CURLM_OK) {
        ms = 0; /* unknown: let the caller call perform */
    }
    lua_pushinteger(L, (lua_Integer)ms);
    return 1;
}

static int l_fds(lua_State *L)
{
    multi_t *m = check_multi(L);
    fd_set rd, wr, ex;
    int fd, maxfd = -1, n = 0;
    CURLMcode mc;

    lua_settop(L, 1);
    if (m->closed) {
        lua_newtable(L);
        return 1;
    }
    FD_ZERO(&rd);
    FD_ZERO(&wr);
    FD_ZERO(&ex);
    mc = curl_multi_fdset(m->multi, &rd, &wr, &ex, &maxfd);
    if (mc != CURLM_OK)
        return push_mcode_error(L, "curl_multi_fdset", mc);
    lua_createtable(L, (int)m->running.n, 0);
    for (fd = 0; fd <= maxfd && fd < FD_SETSIZE; fd++) {
        int r = FD_ISSET(fd, &rd) != 0, w = FD_ISSET(fd, &wr) != 0, x = FD_ISSET(fd, &ex) != 0;
        if (!r && !w && !x)
            continue;
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, fd);
        lua_setfield(L, -2, "fd");
        lua_pushboolean(L, r || x);
        lua_setfield(L, -2, "read");
        lua_pushboolean(L, w);
        lua_setfield(L, -2, "write");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static int l_cancel(lua_State *L)
{
    multi_t *m = check_multi(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    mlist *lists[3];
    int i;

    if (m->closed) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lists[0] = &m->queued;
    lists[1] = &m->running;
    lists[2] = &m->done;
    for (i = 0; i < 3; i++) {
        mitem *it = list_find(lists[i], id);
        if (it) {
            list_unlink(lists[i], it);
            free_item(m, it);
            start_queued(m);
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

static int l_count(lua_State *L)
{
    multi_t *m = check_multi(L);
    lua_pushinteger(L, (lua_Integer)(m->queued.n + m->running.n + m->done.n));
    lua_pushinteger(L, (lua_Integer)m->running.n);
    return 2;
}

static int l_close(lua_State *L)
{
    multi_close(check_multi(L));
    return 0;
}

static int l_tostring(lua_State *L)
{
    multi_t *m = check_multi(L);
    lua_pushfstring(L, "endaoment.partner.curl multi (%s, %d in flight): %p",
                    m->closed ? "closed" : "open",
                    (int)(m->queued.n + m->running.n + m->done.n), (void *)m);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* curl.multi                                                               */

static int l_multi(lua_State *L)
{
    ecurl_lua_options o;
    ecurl_error err;
    long max_conn = DEFAULT_MAX_CONNECTIONS;
    multi_t *m;

    /* Every check that can raise runs before anything is allocated. */
    ecurl_lua_read_options(L, "multi", &o);
    lua_getfield(L, 1, "max_connections"); /* 6 */
    if (!lua_isnil(L, 6)) {
        lua_Number n;
        if (lua_type(L, 6) != LUA_TNUMBER)
            return luaL_error(L, "bad option 'max_connections' to 'multi' (number expected, got %s)",
                              luaL_typename(L, 6));
        n = lua_tonumber(L, 6);
        if (!(n >= 1 && n <= MAX_CONNECTIONS_LIMIT) || n != (lua_Number)(long)n)
            return luaL_error(L, "bad option 'max_connections' to 'multi' (an integer from 1 to %d "
                                 "expected)",
                              MAX_CONNECTIONS_LIMIT);
        max_conn = (long)n;
    }

    m = (multi_t *)lua_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    m->max_conn = max_conn;
    luaL_getmetatable(L, MULTI_MT);
    lua_setmetatable(L, -2);

    if (!(m->spare = (CURL **)calloc((size_t)max_conn, sizeof *m->spare))) {
        multi_close(m);
        return push_error_kind(L, ECURL_KIND_OOM, "out of memory");
    }
    /* The multi handle shares its DNS and connection caches; TLS sessions need a share. */
    if (ecurl_config_init(&m->cfg, o.ca_file, o.ca_len, o.user_agent, o.ua_len, o.max_body,
                          o.allow_http_loopback, 0, &err) != 0) {
        multi_close(m);
        return ecurl_lua_push_error(L, &err, -1);
    }
    m->multi = curl_multi_init();
    if (!m->multi ||
        curl_multi_setopt(m->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_conn) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, max_conn) != CURLM_OK) {
        multi_close(m);
        return push_error_kind(L, ECURL_KIND_OOM, "cannot create a libcurl multi handle");
    }
    return 1;
}

void ecurl_multi_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "add", l_add },       { "perform", l_perform }, /* next: below, with an upvalue */
        { "wait", l_wait },     { "timeout", l_timeout }, { "fds", l_fds },
        { "cancel", l_cancel }, { "count", l_count },     { "close", l_close },
        { NULL, NULL },
    };
    static const luaL_Reg meta[] = {
        { "__gc", l_close },
        { "__close", l_close },
        { "__tostring", l_tostring },
        { NULL, NULL },
    };

    luaL_newmetatable(L, MULTI_MT);
    ecurl_lua_setfuncs(L, meta);
    lua_newtable(L);
    ecurl_lua_setfuncs(L, methods);
    /* push_taken as an upvalue: on 5.1 and LuaJIT pushing a C function allocates (and may raise). */
    lua_pushcfunction(L, push_taken);
    lua_pushcclosure(L, l_next, 1);
    lua_setfield(L, -2, "next");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_pushcfunction(L, l_multi);
    lua_setfield(L, -2, "multi");
}
