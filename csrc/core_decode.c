/*
 * core.decode: the JSON of an API answer into Lua values, as lua-cjson 2.1.0
 * decodes it (objects and arrays as plain tables, every number a double,
 * null as the lightuserdata NULL), but strict RFC 8259 and built for the hot
 * path: every call decodes one answer, and lua-cjson took a third of the
 * SDK's own time per call (bench/README.md). Three things make it cheaper:
 *
 *  - Tables are created at their final size. The members of a small object
 *    or array wait on the Lua stack until it closes, so a table is never
 *    rehashed as it grows (lua-cjson's lua_newtable + rawset rehashed an
 *    object of 9 members four times).
 *  - A string without escapes is pushed straight from the input; one with
 *    escapes is unescaped into a scratch buffer that is a userdata (the
 *    collector owns it, so an out-of-memory raise in the middle leaks
 *    nothing) and at most as long as the input.
 *  - Object keys come from a cache of the Lua strings of keys seen before
 *    (below), instead of being interned again.
 *
 * Bad JSON returns nil and a message naming the character; nothing raises
 * but out-of-memory.
 */
#include "core.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* lua-cjson's default decode_max_depth, so an answer it decoded is not refused here. */
#define DEC_MAX_DEPTH 1000
/*
 * Members held on the stack before a table is made: enough for every
 * documented answer object. A larger container gets its table at this size
 * and grows as usual. Below PRESIZE_DEPTH levels only, so the pending
 * members of all open containers stay far below Lua 5.1's 8000 C-stack slots.
 */
#define PENDING_MAX 32
#define PRESIZE_DEPTH 8

/*
 * Object keys seen before, as Lua strings: the answers of one API repeat the
 * same few dozen field names, and making a short Lua string (hashing it and
 * looking it up in the interning table) was the largest Lua cost of a call
 * (about 290 instructions a string). A key found here is pushed from a table
 * instead. Only keys: values (ids, amounts) rarely repeat between answers.
 * The strings live in a table in the registry, so the pointers kept here
 * stay valid (Lua's collector does not move strings); an entry is replaced
 * when another key falls in its slot.
 */
#define KEY_SLOTS 256
#define KEY_MAX 40 /* LUAI_MAXSHORTLEN: longer strings are not interned anyway */
typedef struct {
    const char *p[KEY_SLOTS];
    unsigned char len[KEY_SLOTS];
} keycache_t;

/* The registry key of the cache's table (its address is unique to this module). */
static const char KEYCACHE = 'k';

typedef struct {
    lua_State *L;
    keycache_t *kc; /* NULL: the registry's entry is not a cache (then keys are made as values are) */
    int kci;        /* stack index of its table */
    const unsigned char *start, *p, *end;
    char *scratch; /* NULL until a string needs unescaping */
    int depth;
    char msg[96];
} dec_t;

static int fail(dec_t *d, const char *what)
{
    snprintf(d->msg, sizeof d->msg, "%s at character %lu", what,
             (unsigned long)(d->p - d->start) + 1);
    return -1;
}

static int fail_found(dec_t *d, const char *expected)
{
    char what[64];

    if (d->p >= d->end)
        snprintf(what, sizeof what, "expected %s but found the end", expected);
    else if (*d->p >= 0x20 && *d->p < 0x7f)
        snprintf(what, sizeof what, "expected %s but found '%c'", expected, *d->p);
    else
        snprintf(what, sizeof what, "expected %s but found byte 0x%02x", expected, *d->p);
    return fail(d, what);
}

static void skip_ws(dec_t *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int room(dec_t *d, int n)
{
    if (!lua_checkstack(d->L, n))
        return fail(d, "too many values held at once");
    return 0;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        unsigned c = p[i], x;
        if (c >= '0' && c <= '9')
            x = c - '0';
        else if (c >= 'a' && c <= 'f')
            x = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            x = c - 'A' + 10;
        else
            return -1;
        v = (v << 4) | x;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * The scratch buffer: unescaped text is never longer than its escaped form,
 * so the input's length bounds every string. Kept at the stack's bottom,
 * under the pending values, so settop to a container's base never drops it.
 */
static char *scratch(dec_t *d)
{
    if (!d->scratch) {
        d->scratch = (char *)lua_newuserdata(d->L, (size_t)(d->end - d->start) + 1);
        lua_replace(d->L, 2);
    }
    return d->scratch;
}

/* The bytes that end a plain run in a string: '"', '\\' and the control characters. */
static const unsigned char STOP[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['"'] = 1, ['\\'] = 1,
};

#define ONES ((uint64_t)0x0101010101010101u)
#define HIGHS ((uint64_t)0x8080808080808080u)

/* Pushes a key that has no escape: from the cache, or made and kept there. */
static void push_key(dec_t *d, const unsigned char *s, size_t len)
{
    keycache_t *kc = d->kc;
    unsigned slot;

    if (!kc || len > KEY_MAX || len == 0) {
        lua_pushlstring(d->L, (const char *)s, len);
        return;
    }
    slot = ((unsigned)len * 31u + s[0] * 7u + s[len - 1] * 3u + s[len / 2]) % KEY_SLOTS;
    if (kc->len[slot] == len && memcmp(kc->p[slot], s, len) == 0) {
        lua_rawgeti(d->L, d->kci, (int)slot + 1);
        return;
    }
    lua_pushlstring(d->L, (const char *)s, len);
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->kci, (int)slot + 1);
    kc->p[slot] = lua_tostring(d->L, -1);
    kc->len[slot] = (unsigned char)len;
}

/* At the opening quote: pushes the string (an object key: is_key). */
static int string(dec_t *d, int is_key)
{
    const unsigned char *s = ++d->p, *p = s;
    char *o, *o0;

    /*
     * The common case: no escape, pushed straight from the input. Eight
     * bytes at a time while none of them can end the run (no '"', '\\' or
     * byte below 0x20: the classic has-zero-byte tests); then byte by byte.
     * A Lua string always has a NUL after its last byte, and NUL stops the
     * bytewise scan, so that loop needs no bounds test.
     */
    while (d->end - p >= 8) {
        uint64_t w, q, b;
        memcpy(&w, p, 8);
        q = w ^ (ONES * '"');
        b = w ^ (ONES * '\\');
        if (((q - ONES) & ~q & HIGHS) | ((b - ONES) & ~b & HIGHS) | ((w - ONES * 0x20) & ~w & HIGHS))
            break;
        p += 8;
    }
    while (!STOP[*p])
        p++;
    if (p < d->end && *p == '"') {
        if (is_key)
            push_key(d, s, (size_t)(p - s));
        else
            lua_pushlstring(d->L, (const char *)s, (size_t)(p - s));
        d->p = p + 1;
        return 0;
    }
    o0 = o = scratch(d);
    memcpy(o, s, (size_t)(p - s));
    o += p - s;
    for (;;) {
        unsigned c;
        if (p >= d->end) {
            d->p = p;
            return fail(d, "unterminated string");
        }
        c = *p;
        if (c == '"')
            break;
        if (c < 0x20) {
            d->p = p;
            return fail(d, "control character in a string");
        }
        if (c != '\\') {
            *o++ = (char)c;
            p++;
            continue;
        }
        if (p + 1 >= d->end) {
            d->p = p;
            return fail(d, "unterminated string");
        }
        switch (p[1]) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (d->end - p < 6 || hex4(p + 2, &cp) != 0) {
                d->p = p;
                return fail(d, "invalid \\u escape");
            }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                d->p = p;
                return fail(d, "unpaired low surrogate in a \\u escape");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (d->end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &lo) != 0 ||
                    lo < 0xDC00 || lo > 0xDFFF) {
                    d->p = p;
                    return fail(d, "unpaired high surrogate in a \\u escape");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            o += put_utf8(o, cp);
            p += 6;
            continue;
        }
        default:
            d->p = p;
            return fail(d, "invalid escape in a string");
        }
        p += 2;
    }
    lua_pushlstring(d->L, o0, (size_t)(o - o0));
    d->p = p + 1;
    return 0;
}

/* Past one or more digits at *pp, or a refusal that names what was expected there. */
static int digit_run(dec_t *d, const unsigned char **pp, const char *what)
{
    const unsigned char *p = *pp;

    if (p >= d->end || *p < '0' || *p > '9') {
        d->p = p;
        return fail_found(d, what);
    }
    while (p < d->end && *p >= '0' && *p <= '9')
        p++;
    *pp = p;
    return 0;
}

/* Every JSON number becomes a double, as lua-cjson 2.1.0 gives them. */
static int number(dec_t *d)
{
    const unsigned char *s = d->p, *p = s;
    int simple = 1, digits = 0;
    double v = 0;
    size_t len;

    if (*p == '-')
        p++;
    if (p < d->end && *p == '0') {
        p++;
        digits = 1;
    } else if (p < d->end && *p >= '1' && *p <= '9') {
        while (p < d->end && *p >= '0' && *p <= '9') {
            v = v * 10 + (*p - '0');
            p++;
            digits++;
        }
    } else {
        d->p = p;
        return fail_found(d, "a digit");
    }
    if (p < d->end && *p == '.') {
        simple = 0;
        p++;
        if (digit_run(d, &p, "a digit after '.'") != 0)
            return -1;
    }
    if (p < d->end && (*p == 'e' || *p == 'E')) {
        simple = 0;
        p++;
        if (p < d->end && (*p == '+' || *p == '-'))
            p++;
        if (digit_run(d, &p, "a digit in the exponent") != 0)
            return -1;
    }
    d->p = p;
    /* 15 digits stay below 2^53, where the sum above is exact: what strtod gives. */
    if (simple && digits <= 15) {
        lua_pushnumber(d->L, (lua_Number)(*s == '-' ? -v : v));
        return 0;
    }
    len = (size_t)(p - s);
    {
        char local[64], *buf = len < sizeof local ? local : scratch(d);
        char point = localeconv()->decimal_point[0];
        size_t i;
        memcpy(buf, s, len);
        buf[len] = '\0';
        /* strtod reads the locale's decimal point; the grammar above has fixed the rest. */
        if (point != '.')
            for (i = 0; i < len; i++)
                if (buf[i] == '.')
                    buf[i] = point;
        lua_pushnumber(d->L, (lua_Number)strtod(buf, NULL));
    }
    return 0;
}

static int literal(dec_t *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return fail_found(d, "a value");
    d->p += n;
    return 0;
}

static int value(dec_t *d);

/*
 * Moves the n values (arrays) or n key-value pairs (objects) above base
 * into a new table of exactly that size, left at base + 1.
 */
static void collect(dec_t *d, int base, int n, int is_array)
{
    lua_State *L = d->L;
    int i;

    if (is_array) {
        lua_createtable(L, n, 0);
        lua_insert(L, base + 1);
        for (i = n; i >= 1; i--)
            lua_rawseti(L, base + 1, i);
        return;
    }
    lua_createtable(L, 0, n);
    lua_insert(L, base + 1);
    /* In order, so a repeated key keeps its last value. */
    for (i = 0; i < n; i++) {
        lua_pushvalue(L, base + 2 + 2 * i);
        lua_pushvalue(L, base + 3 + 2 * i);
        lua_rawset(L, base + 1);
    }
    lua_settop(L, base + 1);
}

/* At '[' or '{': pushes the table. */
static int container(dec_t *d, int is_array)
{
    lua_State *L = d->L;
    int base = lua_gettop(L), n = 0;
    int direct = d->depth > PRESIZE_DEPTH; /* the table is made now and filled as members come */
    unsigned char close = is_array ? ']' : '}';

    if (++d->depth > DEC_MAX_DEPTH)
        return fail(d, "nested too deeply (more than 1000 arrays and objects)");
    d->p++;
    if (direct) {
        if (room(d, 4) != 0)
            return -1;
        lua_newtable(L);
    }
    skip_ws(d);
    if (d->p < d->end && *d->p == close) {
        d->p++;
        d->depth--;
        if (!direct)
            lua_createtable(L, 0, 0);
        return 0;
    }
    for (;;) {
        if (room(d, 4) != 0)
            return -1;
        if (!is_array) {
            if (d->p >= d->end || *d->p != '"')
                return fail_found(d, "a string key");
            if (string(d, 1) != 0)
                return -1;
            skip_ws(d);
            if (d->p >= d->end || *d->p != ':')
                return fail_found(d, "':'");
            d->p++;
            skip_ws(d);
        }
        if (value(d) != 0)
            return -1;
        n++;
        if (direct) {
            if (is_array)
                lua_rawseti(L, base + 1, n);
            else
                lua_rawset(L, base + 1);
        } else if (n == PENDING_MAX) {
            /* Larger than most: its table now, at this size, and the rest as they come. */
            collect(d, base, n, is_array);
            direct = 1;
        }
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (d->p < d->end && *d->p == close) {
            d->p++;
            break;
        }
        return fail_found(d, is_array ? "',' or ']'" : "',' or '}'");
    }
    if (!direct)
        collect(d, base, n, is_array);
    d->depth--;
    return 0;
}

static int value(dec_t *d)
{
    if (d->p >= d->end)
        return fail_found(d, "a value");
    switch (*d->p) {
    case '{':
        return container(d, 0);
    case '[':
        return container(d, 1);
    case '"':
        return string(d, 0);
    case 't':
        if (literal(d, "true", 4) != 0)
            return -1;
        lua_pushboolean(d->L, 1);
        return 0;
    case 'f':
        if (literal(d, "false", 5) != 0)
            return -1;
        lua_pushboolean(d->L, 0);
        return 0;
    case 'n':
        if (literal(d, "null", 4) != 0)
            return -1;
        /* the same lightuserdata NULL as cjson.null and core.null */
        lua_pushlightuserdata(d->L, NULL);
        return 0;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
            return number(d);
        return fail_found(d, "a value");
    }
}

/*
 * Pushes the key cache's table and returns its C part, made on first use:
 * the table holds the strings at 1..KEY_SLOTS and the keycache_t userdata
 * at KEY_SLOTS + 1. NULL if it cannot be made (the table is pushed anyway).
 */
static keycache_t *keycache(lua_State *L)
{
    keycache_t *kc;

    lua_pushlightuserdata(L, (void *)&KEYCACHE);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, KEY_SLOTS + 1);
        kc = (keycache_t *)lua_touserdata(L, -1);
        lua_pop(L, 1);
        return kc;
    }
    lua_pop(L, 1);
    lua_createtable(L, KEY_SLOTS + 1, 0);
    kc = (keycache_t *)lua_newuserdata(L, sizeof *kc);
    memset(kc, 0, sizeof *kc);
    lua_rawseti(L, -2, KEY_SLOTS + 1);
    lua_pushlightuserdata(L, (void *)&KEYCACHE);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return kc;
}

/* core.decode(s): value, or nil and a message. */
int ep_l_decode(lua_State *L)
{
    dec_t d;
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);

    lua_settop(L, 1);
    lua_pushnil(L); /* slot 2: the scratch buffer, once one is needed */
    d.L = L;
    d.kc = keycache(L); /* slot 3: its table */
    d.kci = 3;
    d.start = d.p = (const unsigned char *)s;
    d.end = d.start + len;
    d.scratch = NULL;
    d.depth = 0;
    d.msg[0] = '\0';
    skip_ws(&d);
    if (value(&d) == 0) {
        skip_ws(&d);
        if (d.p == d.end)
            return 1;
        fail_found(&d, "the end");
    }
    lua_settop(L, 3);
    lua_pushnil(L);
    lua_pushstring(L, d.msg);
    return 2;
}
