/*
 * endaoment.partner.core: CPU-only helpers for the Lua SDK (UUIDs, derived
 * idempotency keys, validators, JSON encoding, request-body preparation,
 * error objects).
 * No I/O of any kind, so it is safe inside an nginx worker.
 */
#include "core.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <unistd.h>
#include <uuid/uuid.h>

/* Larger scratch buffers are released after the call instead of pinning memory in every worker. */
#define EP_KEEP_MAX (256 * 1024)

/*
 * The encode buffer lives in a GC-owned userdata: if Lua raises while it is
 * in use (out of memory), the collector frees it and nothing leaks.
 */
typedef struct {
    strbuf_t sb;
    int busy;
} ep_keepbuf;

static int keepbuf_gc(lua_State *L)
{
    ep_keepbuf *kb = (ep_keepbuf *)lua_touserdata(L, 1);
    if (kb)
        strbuf_free(&kb->sb);
    return 0;
}

strbuf_t *ep_buffer_acquire(lua_State *L)
{
    ep_keepbuf *kb = (ep_keepbuf *)lua_touserdata(L, lua_upvalueindex(EP_UV_KEEPBUF));
    ep_keepbuf *tmp;

    if (!kb->busy) {
        kb->busy = 1;
        strbuf_reset(&kb->sb);
        return &kb->sb;
    }
    /*
     * Busy means re-entry (a __gc finalizer that encodes, run by an
     * allocation inside our call) or a call that was interrupted by a Lua
     * error: use a private buffer, left on the stack for the GC to own.
     */
    tmp = (ep_keepbuf *)lua_newuserdata(L, sizeof *tmp);
    strbuf_init(&tmp->sb);
    tmp->busy = 1;
    lua_getmetatable(L, lua_upvalueindex(EP_UV_KEEPBUF));
    lua_setmetatable(L, -2);
    return &tmp->sb;
}

void ep_buffer_release(lua_State *L, strbuf_t *sb)
{
    ep_keepbuf *kb = (ep_keepbuf *)lua_touserdata(L, lua_upvalueindex(EP_UV_KEEPBUF));

    if (sb == &kb->sb) {
        kb->busy = 0;
        if (sb->cap > EP_KEEP_MAX)
            strbuf_free(sb);
    } else {
        strbuf_free(sb);
    }
}

/*
 * UUIDs from a per-thread pool of kernel randomness: one getrandom(2) per
 * EP_RANDOM_POOL / 16 UUIDs instead of libuuid's several system calls each.
 * The pool must never outlive a fork(): nginx workers and preforked servers
 * forked after the master made one UUID would otherwise hand out the same
 * bytes. A fork handler bumps a generation counter in the child (glibc
 * unregisters it if this module is unloaded), and a pool filled in another
 * generation is discarded before use.
 */
#define EP_RANDOM_POOL 256

static volatile unsigned long fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_ok;

static void on_fork_child(void)
{
    fork_generation++;
}

static void register_atfork(void)
{
    atfork_ok = pthread_atfork(NULL, NULL, on_fork_child) == 0;
}

static __thread struct {
    unsigned char bytes[EP_RANDOM_POOL];
    size_t left;              /* unused bytes at the end of bytes[] */
    unsigned long generation; /* fork_generation when filled */
    pid_t pid;                /* the filling process, when no fork handler could be registered */
} pool;

static int fill_random(unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = getrandom(buf, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* 16 random bytes: from the pool, or straight from libuuid if the kernel refuses getrandom. */
static void random16(unsigned char out[16])
{
    pthread_once(&atfork_once, register_atfork);
    if (pool.left > 0 && (atfork_ok ? pool.generation != fork_generation : pool.pid != getpid()))
        pool.left = 0;
    if (pool.left < 16) {
        if (fill_random(pool.bytes, sizeof pool.bytes) != 0) {
            pool.left = 0;
            uuid_generate_random(out);
            return;
        }
        pool.left = sizeof pool.bytes;
        pool.generation = fork_generation;
        pool.pid = atfork_ok ? 0 : getpid();
    }
    memcpy(out, pool.bytes + sizeof pool.bytes - pool.left, 16);
    /* Bytes handed out are wiped: they never appear in a core dump or a later caller. */
    memset(pool.bytes + sizeof pool.bytes - pool.left, 0, 16);
    pool.left -= 16;
}

void ep_uuid4(char out[37])
{
    uuid_t u;

    random16(u);
    u[6] = (unsigned char)((u[6] & 0x0F) | 0x40);
    u[8] = (unsigned char)((u[8] & 0x3F) | 0x80);
    uuid_unparse_lower(u, out);
}

void ep_push_error(lua_State *L, const char *kind, const char *msg, const char *field)
{
    lua_createtable(L, 0, 3);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    if (field) {
        lua_pushstring(L, field);
        lua_setfield(L, -2, "field");
    }
    lua_pushvalue(L, lua_upvalueindex(EP_UV_ERROR));
    lua_setmetatable(L, -2);
}

/* nil, msg: the standalone validators' failure shape */
static int push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static int fail_not_string(lua_State *L, int idx)
{
    char d[32], msg[64];

    ep_describe_type(L, idx, d, sizeof d);
    snprintf(msg, sizeof msg, "must be a string (got %s)", d);
    return push_fail(L, msg);
}

static int l_uuid4(lua_State *L)
{
    char buf[37];

    ep_uuid4(buf);
    lua_pushlstring(L, buf, 36);
    return 1;
}

static int l_is_uuid(lua_State *L)
{
    size_t len;
    const char *s;

    if (lua_type(L, 1) != LUA_TSTRING) {
        lua_pushboolean(L, 0);
        return 1;
    }
    s = lua_tolstring(L, 1, &len);
    lua_pushboolean(L, ep_is_uuid(s, len));
    return 1;
}

static int l_partner_identifier(lua_State *L)
{
    char msg[EP_MSG_MAX];
    const char *s, *out;
    size_t len, outlen;

    if (lua_type(L, 1) != LUA_TSTRING)
        return fail_not_string(L, 1);
    s = lua_tolstring(L, 1, &len);
    if (ep_check_partner_id(s, len, &out, &outlen, msg, sizeof msg))
        return push_fail(L, msg);
    lua_pushlstring(L, out, outlen);
    return 1;
}

typedef int (*ep_string_check)(const char *s, size_t len, char *msg, size_t cap);

static int check_string_arg(lua_State *L, ep_string_check check)
{
    char msg[EP_MSG_MAX];
    const char *s;
    size_t len;

    if (lua_type(L, 1) != LUA_TSTRING)
        return fail_not_string(L, 1);
    s = lua_tolstring(L, 1, &len);
    if (check(s, len, msg, sizeof msg))
        return push_fail(L, msg);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_is_timestamp(lua_State *L)
{
    return check_string_arg(L, ep_check_timestamp);
}

static int l_is_email(lua_State *L)
{
    return check_string_arg(L, ep_check_email);
}

static int l_is_ein(lua_State *L)
{
    return check_string_arg(L, ep_check_ein);
}

static int l_header_value_ok(lua_State *L)
{
    return check_string_arg(L, ep_check_header_value);
}

static int l_header_name_ok(lua_State *L)
{
    return check_string_arg(L, ep_check_header_name);
}

static int l_utf8_len(lua_State *L)
{
    char msg[EP_MSG_MAX];
    const char *s;
    size_t len, n, bad = 0;

    if (lua_type(L, 1) != LUA_TSTRING)
        return fail_not_string(L, 1);
    s = lua_tolstring(L, 1, &len);
    if (ep_utf8_check((const unsigned char *)s, len, &n, &bad)) {
        snprintf(msg, sizeof msg, "must be valid UTF-8 (invalid byte 0x%02X at byte %zu)", (unsigned char)s[bad],
                 bad + 1);
        return push_fail(L, msg);
    }
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int l_is_micro(lua_State *L)
{
    char msg[EP_MSG_MAX];
    uint64_t v;

    if (ep_micro_from_lua(L, 1, 0, &v, msg, sizeof msg))
        return push_fail(L, msg);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_dollars_to_micro(lua_State *L)
{
    char msg[EP_MSG_MAX], out[21];
    uint64_t v;
    size_t n;

    if (ep_dollars_from_lua(L, 1, &v, msg, sizeof msg))
        return push_fail(L, msg);
    n = ep_u64_to_str(v, out);
    lua_pushlstring(L, out, n);
    return 1;
}

static int l_micro_to_dollars(lua_State *L)
{
    char msg[EP_MSG_MAX], whole[21], out[32];
    uint64_t v;
    unsigned frac;
    size_t n, fl = 6;
    int i;

    if (ep_micro_from_lua(L, 1, 1, &v, msg, sizeof msg))
        return push_fail(L, msg);
    n = ep_u64_to_str(v / 1000000, whole);
    memcpy(out, whole, n);
    out[n] = '.';
    frac = (unsigned)(v % 1000000);
    for (i = 5; i >= 0; i--) {
        out[n + 1 + (size_t)i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    /* cents always shown; sub-cent digits only when they carry value */
    while (fl > 2 && out[n + fl] == '0')
        fl--;
    lua_pushlstring(L, out, n + 1 + fl);
    return 1;
}

/* Kept on one line whatever the fields hold, since these end up in logs. */
static void add_sanitized(luaL_Buffer *b, const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        luaL_addchar(b, (c < 0x20 || c == 0x7F) ? ' ' : (char)c);
    }
}

static const char *field_string(lua_State *L, int idx, size_t *len)
{
    int t = lua_type(L, idx);
    if (t == LUA_TSTRING || t == LUA_TNUMBER)
        return lua_tolstring(L, idx, len);
    return NULL;
}

static int error_tostring(lua_State *L)
{
    luaL_Buffer b;
    const char *kind, *msg, *field;
    size_t klen = 0, mlen = 0, flen = 0;
    char status[32];

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "kind");    /* 2 */
    lua_getfield(L, 1, "message"); /* 3 */
    lua_getfield(L, 1, "field");   /* 4 */
    lua_getfield(L, 1, "status");  /* 5 */
    status[0] = '\0';
    if (lua_type(L, 5) == LUA_TNUMBER) {
        double d = (double)lua_tonumber(L, 5);
        if (d >= 0 && d < 1e9 && (double)(long)d == d)
            snprintf(status, sizeof status, "%ld", (long)d);
        else
            snprintf(status, sizeof status, "%g", d);
    } else if (lua_type(L, 5) == LUA_TSTRING) {
        snprintf(status, sizeof status, "%s", lua_tostring(L, 5));
    }
    kind = field_string(L, 2, &klen);
    msg = field_string(L, 3, &mlen);
    field = field_string(L, 4, &flen);

    luaL_buffinit(L, &b);
    luaL_addstring(&b, "endaoment.partner: ");
    if (kind)
        add_sanitized(&b, kind, klen);
    else
        luaL_addstring(&b, "error");
    luaL_addstring(&b, ": ");
    if (msg)
        add_sanitized(&b, msg, mlen);
    else
        luaL_addstring(&b, "(no message)");
    if (field) {
        luaL_addstring(&b, " (field ");
        add_sanitized(&b, field, flen);
        luaL_addchar(&b, ')');
    }
    if (status[0]) {
        luaL_addstring(&b, " [HTTP ");
        add_sanitized(&b, status, strlen(status));
        luaL_addchar(&b, ']');
    }
    luaL_pushresult(&b);
    return 1;
}

static int l_error(lua_State *L)
{
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    lua_createtable(L, 0, 4); /* 4 */
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, 4);
        }
    }
    /* the explicit arguments win over same-named extras */
    lua_pushvalue(L, 1);
    lua_setfield(L, 4, "kind");
    lua_pushvalue(L, 2);
    lua_setfield(L, 4, "message");
    lua_pushvalue(L, lua_upvalueindex(EP_UV_ERROR));
    lua_setmetatable(L, 4);
    return 1;
}

EPARTNER_EXPORT int luaopen_endaoment_partner_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"uuid4", l_uuid4},
        {"is_uuid", l_is_uuid},
        {"partner_identifier", l_partner_identifier},
        {"dollars_to_micro", l_dollars_to_micro},
        {"micro_to_dollars", l_micro_to_dollars},
        {"is_micro", l_is_micro},
        {"utf8_len", l_utf8_len},
        {"is_timestamp", l_is_timestamp},
        {"is_email", l_is_email},
        {"is_ein", l_is_ein},
        {"header_value_ok", l_header_value_ok},
        {"header_name_ok", l_header_name_ok},
        {"error", l_error},
        {"encode", ep_l_encode},
        {"prepare", ep_l_prepare},
        {"validate", ep_l_validate},
        {"sha256_hex", ep_l_sha256_hex},
        {"derive_key", ep_l_derive_key},
        {"derive_natural", ep_l_derive_natural},
        {"decode", ep_l_decode},
        {NULL, NULL},
    };
    ep_keepbuf *kb;
    int m, kbi, erri, arri;

    lua_createtable(L, 0, 24);
    m = lua_gettop(L);

    kb = (ep_keepbuf *)lua_newuserdata(L, sizeof *kb);
    strbuf_init(&kb->sb);
    kb->busy = 0;
    kbi = lua_gettop(L);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, keepbuf_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, kbi);

    /* __index is the metatable itself so the Lua facade can add methods to Error */
    lua_createtable(L, 0, 3);
    erri = lua_gettop(L);
    lua_pushvalue(L, erri);
    lua_setfield(L, erri, "__index");
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, erri, "__tostring");
    lua_pushliteral(L, "endaoment.partner.Error");
    lua_setfield(L, erri, "__name");

    lua_createtable(L, 0, 1);
    arri = lua_gettop(L);
    lua_pushliteral(L, "endaoment.partner.array");
    lua_setfield(L, arri, "__name");

    lua_pushvalue(L, erri);
    lua_setfield(L, m, "Error");
    lua_pushvalue(L, arri);
    lua_setfield(L, m, "array_mt");

    luaL_setfuncs(L, funcs, EP_NUPVALUES); /* pops the keepbuf, Error and array_mt upvalues */

    /* the same lightuserdata NULL as cjson.null, so the two compare equal */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, m, "null");
    lua_pushliteral(L, EP_VERSION);
    lua_setfield(L, m, "version");
    lua_pushliteral(L, EP_DEFAULT_KEY_NAMESPACE);
    lua_setfield(L, m, "DEFAULT_KEY_NAMESPACE");
    lua_pushstring(L, ep_sha256_impl());
    lua_setfield(L, m, "sha256_impl");
    return 1;
}
