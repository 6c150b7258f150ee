/*
 * endaoment.partner.curl: the libcurl transport of the Lua SDK.
 *
 *   local t = curl.new{ ca_file=, max_response_bytes=, user_agent=, allow_http_loopback=,
 *                       proxy=, no_proxy= }
 *   local res, err = t:request{ method=, url=, headers=, body=, timeout_ms=, connect_timeout_ms=,
 *                               retry_safe=, max_sends= }
 *   t:close()   -- also __gc and __close
 *   curl.sleep_ms(ms)   -- blocks the calling thread (nanosleep); the blocking retries wait here
 *
 * A transport owns one easy handle, reused for every request so that
 * connections are kept alive, and one share handle (DNS cache, TLS
 * sessions). curl.multi{...} (csrc/curl_lua_multi.c on csrc/curl_multi.c)
 * runs many requests at once on a libcurl multi handle, with the same
 * options and the same request and result tables as t:request.
 *
 * This file also holds the Lua glue both share (csrc/curl_lua.h): options,
 * request tables, result and error tables. The C below, curl_transfer.c and
 * curl_multi.c, has no Lua in it.
 *
 * Threads: a transport must not be used from two threads at once. libcurl
 * forbids sharing an easy handle between threads, and the share handle is
 * set up without lock callbacks because a Lua state is single-threaded.
 *
 * Failures return nil, err where err is a plain table
 * { kind, message, curl_code, elapsed_ms, sends }; whether a kind is retried
 * is endaoment.partner.retry's decision. Only a wrong argument type (a
 * programming error) raises. Lua is never called while libcurl runs: results
 * are pushed after curl_easy_perform returns.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "curl_lua.h"

#define TRANSPORT_MT "endaoment.partner.curl.transport"
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define DEFAULT_TIMEOUT_MS 30000L
#define DEFAULT_CONNECT_TIMEOUT_MS 10000L
/* One day: fits a 32-bit long, and no API call should ever need longer. */
#define MAX_TIMEOUT_MS 86400000L
/* 1 GiB: far above any API answer, and safe for size_t arithmetic on 32-bit hosts. */
#define MAX_BODY_LIMIT 1073741824.0

typedef struct {
    /*
     * Connections, DNS and the parsed CA store live in this multi handle; each
     * request gets a new easy handle. Reusing an easy handle is unsafe with
     * libcurl before 8.1.0 (Debian 12: 7.88): it keeps pointing at the last
     * transfer's freed headers, and an answer whose first header line is
     * folded then writes to freed memory (curl issue 11101,
     * fuzz/regressions/curl).
     */
    CURLM *multi;
    ecurl_config cfg; /* owned: see ecurl_config_init */
    int closed;
    /*
     * Set while t:request owns tr, from ecurl_transfer_begin until the
     * result is on the stack. Pushing the result allocates, and any
     * allocation may run a __gc finalizer (Lua 5.4, LuaJIT), which may call
     * t:request or t:close: those must not touch tr mid-push. A nested
     * request is refused; a nested close only sets close_pending, which
     * l_request applies once the push is over.
     */
    int busy;
    int close_pending;
    /*
     * The transfer lives inside the GC-owned userdata, so that its buffers
     * are reachable from exactly one owner whatever happens; l_request
     * releases them before it returns or re-raises.
     */
    ecurl_transfer tr;
} transport_t;

EPARTNER_EXPORT int luaopen_endaoment_partner_curl(lua_State *L);

int ecurl_lua_push_error(lua_State *L, const ecurl_error *e, double elapsed_ms, long sends)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, ecurl_kind_name(e->kind));
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, e->message);
    lua_setfield(L, -2, "message");
    if (e->curl_code >= 0) {
        lua_pushinteger(L, (lua_Integer)e->curl_code);
        lua_setfield(L, -2, "curl_code");
    }
    if (elapsed_ms >= 0) {
        lua_pushnumber(L, (lua_Number)elapsed_ms);
        lua_setfield(L, -2, "elapsed_ms");
    }
    if (sends >= 0) {
        lua_pushinteger(L, (lua_Integer)sends);
        lua_setfield(L, -2, "sends");
    }
    return 2;
}

static int push_config_error(lua_State *L, const char *message)
{
    ecurl_error e;
    ecurl_error_set(&e, ECURL_KIND_CONFIG, -1, "%s", message);
    return ecurl_lua_push_error(L, &e, -1, -1);
}

static void transport_close(transport_t *t)
{
    if (t->closed)
        return;
    t->closed = 1;
    /* The transfer first: it resets the easy handle it points into. Its kept buffers go too. */
    t->tr.keep_buffers = 0;
    ecurl_transfer_release(&t->tr);
    if (t->multi) {
        curl_multi_cleanup(t->multi);
        t->multi = NULL;
    }
    /* Only after the easy handle is gone: a share still in use cannot be cleaned up. */
    ecurl_config_release(&t->cfg);
}

static transport_t *check_transport(lua_State *L)
{
    return (transport_t *)luaL_checkudata(L, 1, TRANSPORT_MT);
}

static int l_close(lua_State *L)
{
    transport_t *t = check_transport(L);
    if (t->busy) {
        /* Called by a finalizer while l_request pushes from tr: close when the push is over. */
        t->close_pending = 1;
        return 0;
    }
    transport_close(t);
    return 0;
}

static int l_tostring(lua_State *L)
{
    transport_t *t = check_transport(L);
    lua_pushfstring(L, "endaoment.partner.curl transport (%s): %p", t->closed ? "closed" : "open",
                    (void *)t);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* options shared by curl.new and curl.multi                                */

/* Option strings are paths or header values: an embedded NUL would silently cut them. */
static const char *opt_string(lua_State *L, int idx, const char *fname, const char *name,
                              size_t *len)
{
    const char *s;
    if (lua_isnil(L, idx))
        return NULL;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "bad option '%s' to '%s' (string expected, got %s)", name, fname,
                   luaL_typename(L, idx));
    s = lua_tolstring(L, idx, len);
    if (strlen(s) != *len)
        luaL_error(L, "bad option '%s' to '%s' (contains a NUL byte)", name, fname);
    return s;
}

void ecurl_lua_read_options(lua_State *L, const char *fname, ecurl_lua_options *o)
{
    const char *why;

    memset(o, 0, sizeof *o);
    o->max_body = ECURL_DEFAULT_MAX_BODY;
    o->allow_http_loopback = 1;

    /* Every check that can raise runs before the caller allocates anything. */
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "ca_file");             /* 2 */
    lua_getfield(L, 1, "user_agent");          /* 3 */
    lua_getfield(L, 1, "max_response_bytes");  /* 4 */
    lua_getfield(L, 1, "allow_http_loopback"); /* 5 */
    lua_getfield(L, 1, "proxy");               /* 6 */
    lua_getfield(L, 1, "no_proxy");            /* 7: ECURL_LUA_OPTIONS_TOP - 1 */

    o->ca_file = opt_string(L, 2, fname, "ca_file", &o->ca_len);
    o->user_agent = opt_string(L, 3, fname, "user_agent", &o->ua_len);
    if (o->user_agent && !ecurl_valid_field_value(o->user_agent, o->ua_len))
        luaL_error(L, "bad option 'user_agent' to '%s' (contains a control character)", fname);
    o->proxy = opt_string(L, 6, fname, "proxy", &o->proxy_len);
    if (o->proxy && (why = ecurl_proxy_problem(o->proxy, o->proxy_len, 0)) != NULL)
        luaL_error(L, "bad option 'proxy' to '%s' (%s)", fname, why);
    o->noproxy = opt_string(L, 7, fname, "no_proxy", &o->noproxy_len);
    if (o->noproxy && (why = ecurl_proxy_problem(o->noproxy, o->noproxy_len, 1)) != NULL)
        luaL_error(L, "bad option 'no_proxy' to '%s' (%s)", fname, why);
    if (!lua_isnil(L, 4)) {
        lua_Number n;
        if (lua_type(L, 4) != LUA_TNUMBER)
            luaL_error(L, "bad option 'max_response_bytes' to '%s' (number expected, got %s)",
                       fname, luaL_typename(L, 4));
        n = lua_tonumber(L, 4);
        if (!(n >= 1 && n <= MAX_BODY_LIMIT) || n != (lua_Number)(size_t)n)
            luaL_error(L, "bad option 'max_response_bytes' to '%s' (an integer from 1 "
                          "to 1073741824 expected)",
                       fname);
        o->max_body = (size_t)n;
    }
    if (!lua_isnil(L, 5)) {
        if (lua_type(L, 5) != LUA_TBOOLEAN)
            luaL_error(L, "bad option 'allow_http_loopback' to '%s' (boolean expected, got %s)",
                       fname, luaL_typename(L, 5));
        o->allow_http_loopback = lua_toboolean(L, 5);
    }
    if (!o->ca_file && access(SYSTEM_CA_BUNDLE, R_OK) == 0) {
        o->ca_file = SYSTEM_CA_BUNDLE;
        o->ca_len = strlen(SYSTEM_CA_BUNDLE);
    }
}

int ecurl_lua_config_init(ecurl_config *cfg, const ecurl_lua_options *o, int share_dns, ecurl_error *err)
{
    if (ecurl_config_init(cfg, o->ca_file, o->ca_len, o->user_agent, o->ua_len, o->max_body,
                          o->allow_http_loopback, share_dns, err) != 0)
        return -1;
    return ecurl_config_set_proxy(cfg, o->proxy, o->proxy_len, o->noproxy, o->noproxy_len, err);
}

/* ------------------------------------------------------------------------ */
/* curl.new                                                                 */

static int l_new(lua_State *L)
{
    ecurl_lua_options o;
    transport_t *t;
    ecurl_error err;

    ecurl_lua_read_options(L, "new", &o);

    t = (transport_t *)lua_newuserdata(L, sizeof *t);
    memset(t, 0, sizeof *t);
    ecurl_transfer_init(&t->tr);
    /* One request after another in t->tr: the answer's buffers are reused (transport_close frees them). */
    t->tr.keep_buffers = 1;
    luaL_getmetatable(L, TRANSPORT_MT);
    lua_setmetatable(L, -2);

    if (ecurl_lua_config_init(&t->cfg, &o, 1, &err) != 0) {
        transport_close(t);
        return ecurl_lua_push_error(L, &err, -1, -1);
    }
    t->multi = curl_multi_init();
    if (!t->multi) {
        transport_close(t);
        ecurl_error_set(&err, ECURL_KIND_OOM, -1, "cannot create a libcurl multi handle");
        return ecurl_lua_push_error(L, &err, -1, -1);
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* request tables, shared by t:request and m:add                            */

static int opt_ms(lua_State *L, int idx, long def, long *out)
{
    lua_Number n;
    if (lua_isnil(L, idx)) {
        *out = def;
        return 1;
    }
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    n = lua_tonumber(L, idx);
    if (!(n >= 1 && n <= (lua_Number)MAX_TIMEOUT_MS))
        return 0;
    *out = (long)n;
    return 1;
}

/* Offsets of the fields ecurl_lua_read_request pushes, from its `base`. */
enum { R_URL = 1, R_METHOD, R_BODY, R_HEADERS, R_TIMEOUT, R_CONNECT_TIMEOUT, R_RETRY_SAFE, R_MAX_SENDS };
/* More would be pointless: libcurl itself resends at most 5 times. */
#define MAX_SENDS_LIMIT 1000

int ecurl_lua_read_request(lua_State *L, int idx, ecurl_request *req, int *base,
                           ecurl_error *err)
{
    size_t len;
    int b = lua_gettop(L);

    *base = b;
    memset(req, 0, sizeof *req);
    lua_getfield(L, idx, "url");
    lua_getfield(L, idx, "method");
    lua_getfield(L, idx, "body");
    lua_getfield(L, idx, "headers");
    lua_getfield(L, idx, "timeout_ms");
    lua_getfield(L, idx, "connect_timeout_ms");
    lua_getfield(L, idx, "retry_safe");
    lua_getfield(L, idx, "max_sends");

    if (lua_type(L, b + R_URL) != LUA_TSTRING) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "request.url must be a string");
        return -1;
    }
    req->url = lua_tolstring(L, b + R_URL, &len);
    if (strlen(req->url) != len) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "request.url contains a NUL byte");
        return -1;
    }
    if (lua_isnil(L, b + R_METHOD)) {
        req->method = "GET";
    } else if (lua_type(L, b + R_METHOD) == LUA_TSTRING) {
        req->method = lua_tolstring(L, b + R_METHOD, &len);
        if (strlen(req->method) != len) {
            ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "request.method contains a NUL byte");
            return -1;
        }
    } else {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "request.method must be a string");
        return -1;
    }
    if (lua_type(L, b + R_BODY) == LUA_TSTRING) {
        req->body = lua_tolstring(L, b + R_BODY, &req->body_len);
    } else if (!lua_isnil(L, b + R_BODY)) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "request.body must be a string or nil");
        return -1;
    }
    if (!lua_isnil(L, b + R_HEADERS) && !lua_istable(L, b + R_HEADERS)) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                        "request.headers must be a table of name = value");
        return -1;
    }
    if (!opt_ms(L, b + R_TIMEOUT, DEFAULT_TIMEOUT_MS, &req->timeout_ms)) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                        "request.timeout_ms must be a number of milliseconds from 1 to 86400000");
        return -1;
    }
    if (!opt_ms(L, b + R_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT_MS, &req->connect_timeout_ms)) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                        "request.connect_timeout_ms must be a number of milliseconds from 1 to "
                        "86400000");
        return -1;
    }
    /* retry_safe = false: a write the API does not make idempotent; it is sent once at most. */
    if (lua_type(L, b + R_RETRY_SAFE) == LUA_TBOOLEAN) {
        req->no_resend = !lua_toboolean(L, b + R_RETRY_SAFE);
    } else if (!lua_isnil(L, b + R_RETRY_SAFE)) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "request.retry_safe must be a boolean");
        return -1;
    }
    if (lua_type(L, b + R_MAX_SENDS) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, b + R_MAX_SENDS);
        if (!(n >= 1 && n <= MAX_SENDS_LIMIT) || n != (lua_Number)(long)n) {
            ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                            "request.max_sends must be a whole number from 1 to %d", MAX_SENDS_LIMIT);
            return -1;
        }
        req->max_sends = (long)n;
    } else if (!lua_isnil(L, b + R_MAX_SENDS)) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "request.max_sends must be a number");
        return -1;
    }
    return 0;
}

int ecurl_lua_begin_request(lua_State *L, int base, ecurl_transfer *tr, const ecurl_config *cfg,
                            const ecurl_request *req, ecurl_error *err)
{
    int hidx = base + R_HEADERS;

    if (ecurl_transfer_begin(tr, cfg, req, err) != 0)
        return -1;
    if (!lua_istable(L, hidx))
        return 0;
    lua_pushnil(L);
    while (lua_next(L, hidx) != 0) {
        const char *name, *value;
        size_t nlen, vlen;
        /* Only real strings: lua_tolstring would convert a number key in place and break lua_next. */
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "header names must be strings");
            return -1;
        }
        name = lua_tolstring(L, -2, &nlen);
        if (lua_type(L, -1) != LUA_TSTRING) {
            char shown[72];
            size_t i, n = nlen < sizeof shown - 1 ? nlen : sizeof shown - 1;
            for (i = 0; i < n; i++)
                shown[i] = (name[i] < 0x20 || name[i] == 0x7f) ? '?' : name[i];
            shown[n] = '\0';
            lua_pop(L, 2);
            ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "value of header '%s' must be a string",
                            shown);
            return -1;
        }
        value = lua_tolstring(L, -1, &vlen);
        if (ecurl_transfer_add_header(tr, name, nlen, value, vlen, err) != 0) {
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

static void push_headers(lua_State *L, ecurl_transfer *tr)
{
    size_t pos = 0, nlen, vlen;
    const char *name, *value;

    lua_createtable(L, 0, 8);
    while (ecurl_transfer_next_header(tr, &pos, &name, &nlen, &value, &vlen)) {
        lua_pushlstring(L, name, nlen);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, value, vlen);
        } else {
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, value, vlen);
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
    }
}

void ecurl_lua_push_response(lua_State *L, ecurl_transfer *tr)
{
    const char *version = ecurl_http_version_name(tr->http_version);

    lua_createtable(L, 0, 7);
    lua_pushinteger(L, (lua_Integer)tr->status);
    lua_setfield(L, -2, "status");
    push_headers(L, tr);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, tr->body.data ? tr->body.data : "", tr->body.len);
    lua_setfield(L, -2, "body");
    lua_pushboolean(L, tr->reused);
    lua_setfield(L, -2, "reused");
    lua_pushnumber(L, (lua_Number)tr->elapsed_ms);
    lua_setfield(L, -2, "elapsed_ms");
    lua_pushinteger(L, (lua_Integer)tr->sends);
    lua_setfield(L, -2, "sends");
    if (version) {
        lua_pushstring(L, version);
        lua_setfield(L, -2, "http_version");
    }
}

/* ------------------------------------------------------------------------ */
/* t:request                                                                */

/*
 * Runs under lua_pcall (see l_request): pushes the result of the finished
 * transfer in t->tr, { response } or nil, err. Everything here may raise
 * (out of memory) or run finalizers.
 */
static int push_result(lua_State *L)
{
    transport_t *t = (transport_t *)lua_touserdata(L, 1);
    ecurl_error err;

    if (ecurl_transfer_error(&t->tr, &t->cfg, &err))
        return ecurl_lua_push_error(L, &err, t->tr.elapsed_ms, t->tr.sends);
    ecurl_lua_push_response(L, &t->tr);
    return 1;
}

/*
 * curl_easy_perform on the transport's long-lived multi handle: runs easy
 * to completion (its own timeouts end it) and returns its result.
 */
static CURLcode perform_blocking(CURLM *multi, CURL *easy)
{
    CURLcode result = CURLE_OK;
    CURLMcode mc;
    int running = 1, done = 0;

    if (curl_multi_add_handle(multi, easy) != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    while (!done) {
        CURLMsg *msg;
        int left;
        mc = curl_multi_perform(multi, &running);
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy) {
                result = msg->data.result;
                done = 1;
            }
        }
        if (done)
            break;
        if (mc != CURLM_OK || running == 0) {
            /* The multi handle failed, or let go of the transfer without a result. */
            result = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_SEND_ERROR;
            break;
        }
        if (curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK) {
            result = CURLE_RECV_ERROR;
            break;
        }
    }
    curl_multi_remove_handle(multi, easy);
    return result;
}

static int l_request(lua_State *L)
{
    transport_t *t = check_transport(L);
    ecurl_request req;
    ecurl_error err;
    ecurl_transfer *tr = &t->tr;
    CURL *easy;
    int base, top, rc;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (t->closed)
        return push_config_error(L, "transport is closed");
    if (t->busy)
        return push_config_error(L, "transport busy: t:request was called from a finalizer "
                                    "while this transport was returning a result");

    /*
     * Read every field first (lua_getfield may run __index and raise);
     * after ecurl_transfer_begin nothing below can raise until the result
     * is pushed. The strings stay on the stack, so their pointers stay valid.
     */
    if (ecurl_lua_read_request(L, 2, &req, &base, &err) != 0)
        return ecurl_lua_push_error(L, &err, -1, -1);
    /* The body string stays on this stack until the transfer has ended: lent, not copied. */
    req.body_lent = 1;
    /*
     * Reading ran Lua (__index, finalizers), which may have closed the
     * transport; nothing has been allocated yet, so there is nothing to free.
     */
    if (t->closed)
        return push_config_error(L, "transport is closed");

    /* From here on no Lua runs until push_result, and nothing raises: busy is always cleared. */
    t->busy = 1;
    easy = curl_easy_init();
    if (!easy) {
        t->busy = 0;
        ecurl_error_set(&err, ECURL_KIND_OOM, -1, "cannot create a libcurl easy handle");
        return ecurl_lua_push_error(L, &err, -1, -1);
    }
    if (ecurl_lua_begin_request(L, base, tr, &t->cfg, &req, &err) != 0 ||
        ecurl_transfer_setup(tr, easy, &t->cfg, &req, &err) != 0) {
        ecurl_transfer_end(tr, easy);
        t->busy = 0;
        return ecurl_lua_push_error(L, &err, -1, -1);
    }

    ecurl_transfer_complete(tr, perform_blocking(t->multi, easy));

    /*
     * The push runs protected: if it raises (out of memory, or an error in
     * a Lua 5.1 finalizer), tr is still released, busy cleared and a
     * pending close applied here, and then the error goes on. push_result
     * is an upvalue, so pushing it allocates nothing and cannot raise.
     */
    top = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushlightuserdata(L, t);
    rc = lua_pcall(L, 1, LUA_MULTRET, 0);
    ecurl_transfer_end(tr, easy);
    t->busy = 0;
    if (t->close_pending) {
        t->close_pending = 0;
        transport_close(t);
    }
    if (rc != 0)
        return lua_error(L);
    return lua_gettop(L) - top;
}

/* ------------------------------------------------------------------------ */
/* curl.sleep_ms                                                            */

/* One day: a retry never waits longer (retry_cap_ms and Retry-After are capped far below). */
#define MAX_SLEEP_MS 86400000.0

/* Blocks the calling thread for ms milliseconds (nanosleep, resumed after a signal). */
static int l_sleep_ms(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    struct timespec ts, rem;

    if (!(ms > 0))
        return 0; /* also NaN */
    if (ms > MAX_SLEEP_MS)
        ms = MAX_SLEEP_MS;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms - (lua_Number)ts.tv_sec * 1000) * 1e6);
    if (ts.tv_nsec > 999999999L)
        ts.tv_nsec = 999999999L;
    while (nanosleep(&ts, &rem) != 0 && errno == EINTR)
        ts = rem;
    return 0;
}

/* ------------------------------------------------------------------------ */

int luaopen_endaoment_partner_curl(lua_State *L)
{
    static const luaL_Reg methods[] = {
        /* request: below, with an upvalue */
        { "close", l_close },
        { NULL, NULL },
    };
    static const luaL_Reg meta[] = {
        { "__gc", l_close },
        { "__close", l_close },
        { "__tostring", l_tostring },
        { NULL, NULL },
    };
    static const luaL_Reg funcs[] = {
        { "new", l_new },
        { "sleep_ms", l_sleep_ms },
        { NULL, NULL },
    };
    const curl_version_info_data *vi;

    luaL_newmetatable(L, TRANSPORT_MT);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    /* push_result as an upvalue: on 5.1 and LuaJIT pushing a C function allocates (and may raise). */
    lua_pushcfunction(L, push_result);
    lua_pushcclosure(L, l_request, 1);
    lua_setfield(L, -2, "request");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_newtable(L);
    luaL_setfuncs(L, funcs, 0);
    ecurl_lua_multi_register(L);
    vi = curl_version_info(CURLVERSION_NOW);
    lua_pushstring(L, (vi && vi->version) ? vi->version : LIBCURL_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
