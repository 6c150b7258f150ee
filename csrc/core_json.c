/*
 * JSON writer shared by core.encode and core.prepare: writes straight into
 * one strbuf, validates UTF-8 while escaping, and reports the first problem
 * with the path of the value that caused it.
 */
#include "core.h"

#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 0: copy as is; 1: needs a JSON escape; 2: starts (or continues) a UTF-8 sequence */
static const unsigned char char_class[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x30 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50: '\\' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x60 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x70 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x80 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

static const char hex_digits[] = "0123456789abcdef";

/* A small bounded writer for error paths: truncates, always NUL-terminates. */
typedef struct {
    char *p;
    size_t cap, len;
} bw_t;

static void bw_put(bw_t *w, const char *s, size_t n)
{
    if (w->len + 1 >= w->cap)
        return;
    if (n > w->cap - 1 - w->len)
        n = w->cap - 1 - w->len;
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
}

static int is_ident(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > 64)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static void format_path(ep_ctx *c)
{
    bw_t w;
    int i;

    w.p = c->path;
    w.cap = sizeof c->path;
    w.len = 0;
    c->path[0] = '\0';
    if (c->nseg == 0) {
        bw_put(&w, c->root, strlen(c->root));
        return;
    }
    for (i = 0; i < c->nseg; i++) {
        const ep_seg *s = &c->seg[i];
        char tmp[72];
        if (s->key == NULL) {
            int n = snprintf(tmp, sizeof tmp, "[%zu]", s->index);
            bw_put(&w, tmp, (size_t)n);
        } else if (is_ident(s->key, s->klen)) {
            if (i > 0)
                bw_put(&w, ".", 1);
            bw_put(&w, s->key, s->klen);
        } else {
            /* odd keys (spaces, dots, bytes) stay unambiguous and on one line */
            ep_quote(s->key, s->klen, tmp, sizeof tmp);
            bw_put(&w, "[", 1);
            bw_put(&w, tmp, strlen(tmp));
            bw_put(&w, "]", 1);
        }
    }
}

void ep_ctx_init(ep_ctx *c, lua_State *L, strbuf_t *sb, const char *root)
{
    c->L = L;
    c->sb = sb;
    c->root = root;
    c->kind = NULL;
    c->depth = 0;
    c->nseg = 0;
    c->path[0] = '\0';
    c->msg[0] = '\0';
}

int ep_fail(ep_ctx *c, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    c->kind = "invalid";
    format_path(c);
    n = (size_t)snprintf(c->msg, sizeof c->msg, "%s ", c->path);
    if (n < sizeof c->msg) {
        va_start(ap, fmt);
        vsnprintf(c->msg + n, sizeof c->msg - n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int ep_oom(ep_ctx *c)
{
    c->kind = "oom";
    c->path[0] = '\0';
    snprintf(c->msg, sizeof c->msg, "not enough memory to encode JSON");
    return -1;
}

void ep_push_ctx_error(ep_ctx *c)
{
    ep_push_error(c->L, c->kind ? c->kind : "invalid", c->msg, c->path[0] ? c->path : NULL);
}

int ep_is_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

int ep_has_array_mt(lua_State *L, int idx)
{
    int yes;

    if (!lua_getmetatable(L, idx))
        return 0;
    yes = lua_rawequal(L, -1, lua_upvalueindex(EP_UV_ARRAYMT));
    lua_pop(L, 1);
    return yes;
}

int ep_put_string(ep_ctx *c, const char *str, size_t len, size_t *nchars)
{
    strbuf_t *sb = c->sb;
    const unsigned char *p = (const unsigned char *)str;
    const unsigned char *end = p + len;
    size_t count = 0;
    char *out;

    /*
     * Plain bytes are copied 1:1, so len + 2 suffices until an escape shows
     * up; only then do we check for the escape's extra bytes. This keeps the
     * common loop free of bounds checks without reserving len * 6.
     */
    if (len > SIZE_MAX - 16 || strbuf_reserve(sb, len + 2) != STRBUF_OK)
        return ep_oom(c);
    out = sb->data + sb->len;
    *out++ = '"';
    while (p < end) {
        const unsigned char *run = p;
        unsigned char ch;

        while (p < end && char_class[*p] == 0)
            p++;
        if (p > run) {
            memcpy(out, run, (size_t)(p - run));
            out += p - run;
            count += (size_t)(p - run);
        }
        if (p == end)
            break;
        ch = *p;
        if (char_class[ch] == 1) {
            size_t used = (size_t)(out - sb->data);
            /* room for this escape (6), the rest of the input and the closing quote */
            if (sb->cap - used < (size_t)(end - p) + 7) {
                sb->len = used;
                if (strbuf_grow(sb, (size_t)(end - p) + 7) != STRBUF_OK)
                    return ep_oom(c);
                out = sb->data + used;
            }
            *out++ = '\\';
            switch (ch) {
            case '"': *out++ = '"'; break;
            case '\\': *out++ = '\\'; break;
            case '\n': *out++ = 'n'; break;
            case '\r': *out++ = 'r'; break;
            case '\t': *out++ = 't'; break;
            case '\b': *out++ = 'b'; break;
            case '\f': *out++ = 'f'; break;
            default:
                *out++ = 'u';
                *out++ = '0';
                *out++ = '0';
                *out++ = hex_digits[ch >> 4];
                *out++ = hex_digits[ch & 15];
                break;
            }
            p++;
            count++;
        } else {
            size_t k = ep_utf8_seq(p, (size_t)(end - p));
            if (k == 0) {
                sb->len = (size_t)(out - sb->data);
                return ep_fail(c, "must be valid UTF-8 (invalid byte 0x%02X at byte %zu)", *p,
                               (size_t)(p - (const unsigned char *)str) + 1);
            }
            memcpy(out, p, k);
            out += k;
            p += k;
            count++;
        }
    }
    *out++ = '"';
    sb->len = (size_t)(out - sb->data);
    if (nchars)
        *nchars = count;
    return 0;
}

int ep_put_u64(ep_ctx *c, uint64_t v, int quoted)
{
    char tmp[24];
    size_t n;

    if (strbuf_reserve(c->sb, 24) != STRBUF_OK)
        return ep_oom(c);
    n = ep_u64_to_str(v, tmp);
    if (quoted)
        strbuf_putc_unchecked(c->sb, '"');
    strbuf_append_unchecked(c->sb, tmp, n);
    if (quoted)
        strbuf_putc_unchecked(c->sb, '"');
    return 0;
}

static int put_i64(ep_ctx *c, int64_t v)
{
    if (v < 0) {
        if (strbuf_putc(c->sb, '-') != STRBUF_OK)
            return ep_oom(c);
        /* negate in unsigned arithmetic: -INT64_MIN does not fit an int64_t */
        return ep_put_u64(c, (uint64_t)0 - (uint64_t)v, 0);
    }
    return ep_put_u64(c, (uint64_t)v, 0);
}

/*
 * Shortest of %.15g/%.16g/%.17g that reads back as the same double. The
 * round trip goes through the C locale's printf and strtod alike, and the
 * radix character is then forced to '.', so a host that set LC_NUMERIC
 * (',' as decimal point) still gets JSON.
 */
static int put_double(ep_ctx *c, double d)
{
    char tmp[40], out[40];
    int prec, n = 0;
    size_t i, o = 0;
    int radix_done = 0;

    for (prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (n <= 0 || (size_t)n >= sizeof tmp)
            return ep_fail(c, "could not format the number");
        if (prec == 17 || strtod(tmp, NULL) == d)
            break;
    }
    for (i = 0; i < (size_t)n; i++) {
        char ch = tmp[i];
        if ((ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == 'e' || ch == 'E') {
            out[o++] = ch;
            radix_done = radix_done ? 2 : 0;
        } else if (!radix_done) {
            out[o++] = '.';
            radix_done = 1; /* skip the rest of a multi-byte radix */
        } else if (radix_done == 2) {
            return ep_fail(c, "could not format the number");
        }
    }
    if (strbuf_append(c->sb, out, o) != STRBUF_OK)
        return ep_oom(c);
    return 0;
}

int ep_put_number(ep_ctx *c, int idx)
{
    lua_State *L = c->L;
    double d;

#if EPARTNER_HAVE_INTEGER
    if (lua_isinteger(L, idx))
        return put_i64(c, (int64_t)lua_tointeger(L, idx));
#endif
    d = (double)lua_tonumber(L, idx);
    if (d != d)
        return ep_fail(c, "must be a finite number (got nan)");
    if (d > DBL_MAX || d < -DBL_MAX)
        return ep_fail(c, "must be a finite number (got %s)", d > 0 ? "inf" : "-inf");
    if (d > -EP_SAFE_INT_LIMIT && d < EP_SAFE_INT_LIMIT && (double)(int64_t)d == d)
        return put_i64(c, (int64_t)d);
    return put_double(c, d);
}

/* Positive integer key (1, 2, ...) as an array index; 0 for any other key. */
static size_t array_index(lua_State *L, int idx)
{
    double d;

#if EPARTNER_HAVE_INTEGER
    if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        return i >= 1 ? (size_t)i : 0;
    }
#endif
    d = (double)lua_tonumber(L, idx);
    if (d >= 1 && d < EP_SAFE_INT_LIMIT && (double)(uint64_t)d == d)
        return (size_t)d;
    return 0;
}

static int fail_key(ep_ctx *c, int kidx, const char *what)
{
    char d[80];

    ep_describe_value(c->L, kidx, d, sizeof d);
    return ep_fail(c, "%s (found key %s)", what, d);
}

static int encode_table(ep_ctx *c, int idx)
{
    lua_State *L = c->L;
    size_t n = 0, maxk = 0, i;
    int has_str = 0, is_arr_mt, top;

    if (++c->depth > EP_MAX_DEPTH)
        return ep_fail(c, "is nested more than %d levels deep (or contains a cycle)", EP_MAX_DEPTH);
    if (!lua_checkstack(L, 6))
        return ep_oom(c);
    is_arr_mt = ep_has_array_mt(L, idx);

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            has_str = 1;
            if (n || is_arr_mt)
                return fail_key(c, -2, n ? "mixes array items and string keys" : "is marked as an array (array_mt) but has a string key");
        } else if (kt == LUA_TNUMBER && (i = array_index(L, -2)) != 0) {
            if (has_str)
                return fail_key(c, -2, "mixes array items and string keys");
            n++;
            if (i > maxk)
                maxk = i;
        } else {
            return fail_key(c, -2, "cannot be encoded as JSON: keys must be strings, or 1..n for an array");
        }
        lua_pop(L, 1);
    }
    if (n != maxk)
        return ep_fail(c, "is a sparse array (%zu items but index %zu): JSON arrays need keys 1..n", n, maxk);

    if (n || (is_arr_mt && !has_str)) {
        if (strbuf_putc(c->sb, '[') != STRBUF_OK)
            return ep_oom(c);
        for (i = 1; i <= n; i++) {
            if (i > 1 && strbuf_putc(c->sb, ',') != STRBUF_OK)
                return ep_oom(c);
            lua_rawgeti(L, idx, (int)i);
            ep_seg_index(c, i);
            if (ep_encode_value(c, lua_gettop(L)))
                return -1;
            c->nseg--;
            lua_pop(L, 1);
        }
        if (strbuf_putc(c->sb, ']') != STRBUF_OK)
            return ep_oom(c);
    } else {
        int first = 1;
        if (strbuf_putc(c->sb, '{') != STRBUF_OK)
            return ep_oom(c);
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen);
            top = lua_gettop(L);
            if (!first && strbuf_putc(c->sb, ',') != STRBUF_OK)
                return ep_oom(c);
            first = 0;
            ep_seg_key(c, k, klen);
            if (ep_put_string(c, k, klen, NULL))
                return -1;
            if (strbuf_putc(c->sb, ':') != STRBUF_OK)
                return ep_oom(c);
            if (ep_encode_value(c, top))
                return -1;
            c->nseg--;
            lua_pop(L, 1);
        }
        if (strbuf_putc(c->sb, '}') != STRBUF_OK)
            return ep_oom(c);
    }
    c->depth--;
    return 0;
}

int ep_encode_value(ep_ctx *c, int idx)
{
    lua_State *L = c->L;

    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return ep_put_string(c, s, len, NULL);
    }
    case LUA_TNUMBER:
        return ep_put_number(c, idx);
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            return strbuf_append(c->sb, "true", 4) ? ep_oom(c) : 0;
        return strbuf_append(c->sb, "false", 5) ? ep_oom(c) : 0;
    case LUA_TNIL:
        return strbuf_append(c->sb, "null", 4) ? ep_oom(c) : 0;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return strbuf_append(c->sb, "null", 4) ? ep_oom(c) : 0;
        break;
    case LUA_TTABLE:
        return encode_table(c, idx);
    default:
        break;
    }
    {
        char d[32];
        ep_describe_type(L, idx, d, sizeof d);
        return ep_fail(c, "cannot be encoded as JSON (got %s)", d);
    }
}

int ep_l_encode(lua_State *L)
{
    ep_ctx c;
    strbuf_t *sb;

    lua_settop(L, 1);
    sb = ep_buffer_acquire(L);
    ep_ctx_init(&c, L, sb, "value");
    if (ep_encode_value(&c, 1) == 0) {
        lua_pushlstring(L, sb->data ? sb->data : "", sb->len);
        ep_buffer_release(L, sb);
        return 1;
    }
    ep_buffer_release(L, sb);
    lua_settop(L, 1);
    lua_pushnil(L);
    ep_push_ctx_error(&c);
    return 2;
}
