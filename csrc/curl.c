/*
 * endaoment.partner.curl: the libcurl transport of the Lua SDK.
 *
 *   local t = curl.new{ ca_file=, max_response_bytes=, user_agent=, allow_http_loopback= }
 *   local res, err = t:request{ method=, url=, headers=, body=, timeout_ms=, connect_timeout_ms= }
 *   t:close()   -- also __gc and __close
 *
 * A transport owns one easy handle, reused for every request so that
 * connections are kept alive, and one share handle (DNS cache, TLS
 * sessions) ready for a future multi-handle transport.
 *
 * Threads: a transport must not be used from two threads at once. libcurl
 * forbids sharing an easy handle between threads, and the share handle is
 * set up without lock callbacks because a Lua state is single-threaded.
 *
 * Failures return nil, err where err is a plain table
 * { kind, message, curl_code, retryable, elapsed_ms }; only a wrong
 * argument type (a programming error) raises. Lua is never called while
 * libcurl runs: results are pushed after curl_easy_perform returns.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "curl_transfer.h"

#define TRANSPORT_MT "endaoment.partner.curl.transport"
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define DEFAULT_MAX_BODY 8388608
#define DEFAULT_TIMEOUT_MS 30000L
#define DEFAULT_CONNECT_TIMEOUT_MS 10000L
/* One day: fits a 32-bit long, and no API call should ever need longer. */
#define MAX_TIMEOUT_MS 86400000L
/* 1 GiB: far above any API answer, and safe for size_t arithmetic on 32-bit hosts. */
#define MAX_BODY_LIMIT 1073741824.0

typedef struct {
    CURL *easy;
    CURLSH *share;
    char *ca_file;
    char *user_agent;
    size_t max_body;
    int allow_http_loopback;
    int closed;
    /*
     * The transfer lives inside the GC-owned userdata: if Lua raises while
     * a result is being pushed (out of memory), its buffers are still
     * reachable and are freed by the next request, close or __gc.
     */
    ecurl_transfer tr;
} transport_t;

EPARTNER_EXPORT int luaopen_endaoment_partner_curl(lua_State *L);

/* Local instead of luaL_setfuncs: compat.h's 5.1 shim is defined in core.so, not here. */
static void set_funcs(lua_State *L, const luaL_Reg *r)
{
    for (; r->name != NULL; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
}

static char *dup_string(const char *s, size_t len)
{
    char *p = (char *)malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static int push_error(lua_State *L, const ecurl_error *e, double elapsed_ms)
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
    lua_pushboolean(L, e->retryable);
    lua_setfield(L, -2, "retryable");
    if (elapsed_ms >= 0) {
        lua_pushnumber(L, (lua_Number)elapsed_ms);
        lua_setfield(L, -2, "elapsed_ms");
    }
    return 2;
}

static int push_config_error(lua_State *L, const char *message)
{
    ecurl_error e;
    ecurl_error_set(&e, ECURL_KIND_CONFIG, 0, -1, "%s", message);
    return push_error(L, &e, -1);
}

static void transport_close(transport_t *t)
{
    if (t->closed)
        return;
    t->closed = 1;
    /* The transfer first: it resets the easy handle it points into. */
    ecurl_transfer_release(&t->tr);
    if (t->easy) {
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
    }
    /* Only after the easy handle is gone: a share still in use cannot be cleaned up. */
    if (t->share) {
        curl_share_cleanup(t->share);
        t->share = NULL;
    }
    free(t->ca_file);
    t->ca_file = NULL;
    free(t->user_agent);
    t->user_agent = NULL;
}

static transport_t *check_transport(lua_State *L)
{
    return (transport_t *)luaL_checkudata(L, 1, TRANSPORT_MT);
}

static int l_close(lua_State *L)
{
    transport_close(check_transport(L));
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
/* curl.new                                                                 */

/* Option strings are paths or header values: an embedded NUL would silently cut them. */
static const char *opt_string(lua_State *L, int idx, const char *name, size_t *len)
{
    const char *s;
    if (lua_isnil(L, idx))
        return NULL;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "bad option '%s' to 'new' (string expected, got %s)", name,
                   luaL_typename(L, idx));
    s = lua_tolstring(L, idx, len);
    if (strlen(s) != *len)
        luaL_error(L, "bad option '%s' to 'new' (contains a NUL byte)", name);
    return s;
}

static int l_new(lua_State *L)
{
    const char *ca = NULL, *ua = NULL;
    size_t ca_len = 0, ua_len = 0;
    size_t max_body = DEFAULT_MAX_BODY;
    int allow_loopback = 1;
    transport_t *t;
    ecurl_error err;

    /* Every check that can raise runs before anything is allocated. */
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "ca_file");            /* 2 */
    lua_getfield(L, 1, "user_agent");         /* 3 */
    lua_getfield(L, 1, "max_response_bytes"); /* 4 */
    lua_getfield(L, 1, "allow_http_loopback"); /* 5 */

    ca = opt_string(L, 2, "ca_file", &ca_len);
    ua = opt_string(L, 3, "user_agent", &ua_len);
    if (ua && !ecurl_valid_field_value(ua, ua_len))
        return luaL_error(L, "bad option 'user_agent' to 'new' (contains a control character)");
    if (!lua_isnil(L, 4)) {
        lua_Number n;
        if (lua_type(L, 4) != LUA_TNUMBER)
            return luaL_error(L, "bad option 'max_response_bytes' to 'new' (number expected, got %s)",
                              luaL_typename(L, 4));
        n = lua_tonumber(L, 4);
        if (!(n >= 1 && n <= MAX_BODY_LIMIT) || n != (lua_Number)(size_t)n)
            return luaL_error(L, "bad option 'max_response_bytes' to 'new' (an integer from 1 "
                                 "to 1073741824 expected)");
        max_body = (size_t)n;
    }
    if (!lua_isnil(L, 5)) {
        if (lua_type(L, 5) != LUA_TBOOLEAN)
            return luaL_error(L, "bad option 'allow_http_loopback' to 'new' (boolean expected, "
                                 "got %s)",
                              luaL_typename(L, 5));
        allow_loopback = lua_toboolean(L, 5);
    }
    if (!ca && access(SYSTEM_CA_BUNDLE, R_OK) == 0) {
        ca = SYSTEM_CA_BUNDLE;
        ca_len = strlen(ca);
    }

    t = (transport_t *)lua_newuserdata(L, sizeof *t);
    memset(t, 0, sizeof *t);
    ecurl_transfer_init(&t->tr);
    t->max_body = max_body;
    t->allow_http_loopback = allow_loopback;
    luaL_getmetatable(L, TRANSPORT_MT);
    lua_setmetatable(L, -2);

    if ((ca && !(t->ca_file = dup_string(ca, ca_len))) ||
        (ua && !(t->user_agent = dup_string(ua, ua_len)))) {
        transport_close(t);
        ecurl_error_set(&err, ECURL_KIND_OOM, 0, -1, "out of memory");
        return push_error(L, &err, -1);
    }
    if (ecurl_global_init() != 0) {
        transport_close(t);
        ecurl_error_set(&err, ECURL_KIND_CONFIG, 0, -1, "curl_global_init failed");
        return push_error(L, &err, -1);
    }
    t->share = curl_share_init();
    if (!t->share || curl_share_setopt(t->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
        curl_share_setopt(t->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        transport_close(t);
        ecurl_error_set(&err, ECURL_KIND_OOM, 0, -1, "cannot create a libcurl share handle");
        return push_error(L, &err, -1);
    }
    t->easy = curl_easy_init();
    if (!t->easy) {
        transport_close(t);
        ecurl_error_set(&err, ECURL_KIND_OOM, 0, -1, "cannot create a libcurl easy handle");
        return push_error(L, &err, -1);
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* t:request                                                                */

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

static void transport_config(const transport_t *t, ecurl_config *cfg)
{
    cfg->ca_file = t->ca_file;
    cfg->user_agent = t->user_agent;
    cfg->max_body = t->max_body;
    cfg->allow_http_loopback = t->allow_http_loopback;
    cfg->share = t->share;
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

static int push_response(lua_State *L, ecurl_transfer *tr)
{
    lua_createtable(L, 0, 5);
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
    return 1;
}

enum { R_URL = 3, R_METHOD, R_BODY, R_HEADERS, R_TIMEOUT, R_CONNECT_TIMEOUT };

static int l_request(lua_State *L)
{
    transport_t *t = check_transport(L);
    ecurl_config cfg;
    ecurl_request req;
    ecurl_error err;
    ecurl_transfer *tr = &t->tr;
    size_t len;
    double elapsed;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (t->closed)
        return push_config_error(L, "transport is closed");
    /* Leftovers of a request whose result could not be pushed. */
    ecurl_transfer_release(tr);

    /*
     * Read every field first (lua_getfield may run __index and raise);
     * after ecurl_transfer_begin nothing below can raise until the result
     * is pushed. The strings stay on the stack, so their pointers stay valid.
     */
    lua_getfield(L, 2, "url");
    lua_getfield(L, 2, "method");
    lua_getfield(L, 2, "body");
    lua_getfield(L, 2, "headers");
    lua_getfield(L, 2, "timeout_ms");
    lua_getfield(L, 2, "connect_timeout_ms");

    memset(&req, 0, sizeof req);
    if (lua_type(L, R_URL) != LUA_TSTRING)
        return push_config_error(L, "request.url must be a string");
    req.url = lua_tolstring(L, R_URL, &len);
    if (strlen(req.url) != len)
        return push_config_error(L, "request.url contains a NUL byte");
    if (lua_isnil(L, R_METHOD)) {
        req.method = "GET";
    } else if (lua_type(L, R_METHOD) == LUA_TSTRING) {
        req.method = lua_tolstring(L, R_METHOD, &len);
        if (strlen(req.method) != len)
            return push_config_error(L, "request.method contains a NUL byte");
    } else {
        return push_config_error(L, "request.method must be a string");
    }
    if (lua_type(L, R_BODY) == LUA_TSTRING)
        req.body = lua_tolstring(L, R_BODY, &req.body_len);
    else if (!lua_isnil(L, R_BODY))
        return push_config_error(L, "request.body must be a string or nil");
    if (!lua_isnil(L, R_HEADERS) && !lua_istable(L, R_HEADERS))
        return push_config_error(L, "request.headers must be a table of name = value");
    if (!opt_ms(L, R_TIMEOUT, DEFAULT_TIMEOUT_MS, &req.timeout_ms))
        return push_config_error(L, "request.timeout_ms must be a number of milliseconds "
                                    "from 1 to 86400000");
    if (!opt_ms(L, R_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT_MS, &req.connect_timeout_ms))
        return push_config_error(L, "request.connect_timeout_ms must be a number of "
                                    "milliseconds from 1 to 86400000");

    transport_config(t, &cfg);
    if (ecurl_transfer_begin(tr, &cfg, &req, &err) != 0)
        goto failed;
    if (lua_istable(L, R_HEADERS)) {
        lua_pushnil(L);
        while (lua_next(L, R_HEADERS) != 0) {
            const char *name, *value;
            size_t nlen, vlen;
            /* Only real strings: lua_tolstring would convert a number key in place and break lua_next. */
            if (lua_type(L, -2) != LUA_TSTRING) {
                ecurl_error_set(&err, ECURL_KIND_CONFIG, 0, -1, "header names must be strings");
                goto failed;
            }
            name = lua_tolstring(L, -2, &nlen);
            if (lua_type(L, -1) != LUA_TSTRING) {
                char shown[72];
                size_t i, n = nlen < sizeof shown - 1 ? nlen : sizeof shown - 1;
                for (i = 0; i < n; i++)
                    shown[i] = (name[i] < 0x20 || name[i] == 0x7f) ? '?' : name[i];
                shown[n] = '\0';
                ecurl_error_set(&err, ECURL_KIND_CONFIG, 0, -1,
                                "value of header '%s' must be a string", shown);
                goto failed;
            }
            value = lua_tolstring(L, -1, &vlen);
            if (ecurl_transfer_add_header(tr, name, nlen, value, vlen, &err) != 0)
                goto failed;
            lua_pop(L, 1);
        }
    }
    if (ecurl_transfer_setup(tr, t->easy, &cfg, &req, &err) != 0)
        goto failed;

    ecurl_transfer_complete(tr, curl_easy_perform(t->easy));

    if (ecurl_transfer_error(tr, &cfg, &err)) {
        elapsed = tr->elapsed_ms;
        ecurl_transfer_release(tr);
        return push_error(L, &err, elapsed);
    }
    push_response(L, tr);
    ecurl_transfer_release(tr);
    return 1;

failed:
    ecurl_transfer_release(tr);
    return push_error(L, &err, -1);
}

/* ------------------------------------------------------------------------ */

int luaopen_endaoment_partner_curl(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "request", l_request },
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
        { NULL, NULL },
    };
    const curl_version_info_data *vi;

    luaL_newmetatable(L, TRANSPORT_MT);
    set_funcs(L, meta);
    lua_newtable(L);
    set_funcs(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_newtable(L);
    set_funcs(L, funcs);
    vi = curl_version_info(CURLVERSION_NOW);
    lua_pushstring(L, (vi && vi->version) ? vi->version : LIBCURL_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
