/*
 * core.prepare / core.validate: validate a request body against the
 * operation's schema and write its JSON in the same pass, into one buffer,
 * without building intermediate tables or modifying the caller's body.
 *
 * Tables are read with raw access only: no metamethod (hence no Lua code)
 * runs while the buffer is in use.
 */
#include "core.h"

#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>

#define EP_MAX_WARN 16

enum ep_type {
    T_STRING,     /* UTF-8 string; min/max counted in characters */
    T_PARTNER_ID, /* trimmed, then 16-64 printable ASCII; the trimmed value is sent */
    T_UUID,
    T_IDEM,       /* idempotencyKey: a UUID, generated when absent */
    T_MICRO,      /* micro-dollars: digit string or Lua integer, always sent as a string */
    T_TIMESTAMP,
    T_EMAIL,
    T_COUNTRY,
    T_ENUM,
    T_BOOL,
    T_NUMBER,
    T_TICKER,
    T_EIN,
    T_OBJECT,
    T_ARRAY
};

enum ep_flags {
    F_REQ = 1,      /* absent (nil) is an error */
    F_NULL = 2,     /* core.null / cjson.null allowed, sent as null */
    F_NONEMPTY = 4, /* strings: at least one character */
    F_POS = 8,      /* numbers: > 0 */
    F_NONNEG = 16   /* numbers: >= 0 */
};

/*
 * Which of a field's rules are guesses (schema.lua's provenance "guess").
 * A guess never blocks money by default: a broken guessed rule becomes a
 * warning and the value is sent as given; opts.strict refuses it.
 */
enum ep_guess {
    G_REQ = 1,
    G_NONEMPTY = 2,
    G_MAX = 4,
    G_FORMAT = 8, /* the type's own check (a ticker's alphabet, a partner id's length) */
    G_RANGE = 16, /* > 0, >= 0 */
    G_ITEMS = 32, /* array length */
    G_SUM = 64    /* TAG_GRANTS: the items' total against the inbound amount */
};

/* Fields whose values feed checks that span several fields. */
enum ep_tag {
    TAG_NONE,
    TAG_USER_ID,        /* top-level partnerUserIdentifier, reported in info */
    TAG_INBOUND_AMOUNT, /* the grants may not add up to more than this */
    TAG_GRANT_AMOUNT,
    TAG_GRANTS
};

typedef struct ep_schema ep_schema;

typedef struct ep_field {
    const char *name;
    const char *jkey; /* "name": ready to copy */
    unsigned char nlen, jlen;
    unsigned char type, flags, tag, guess;
    unsigned short min;            /* T_ARRAY: min items */
    unsigned short max;            /* T_STRING: max characters; T_ARRAY: max items; 0 = no limit */
    const ep_schema *schema;       /* T_OBJECT */
    const struct ep_field *item;   /* T_ARRAY */
    const char *const *choices;    /* T_ENUM, NULL-terminated */
    const char *noun;              /* T_ARRAY, for "at least 1 grant" */
} ep_field;

struct ep_schema {
    const ep_field *fields;
    int nfields;
    /* at least one of these two fields must be present and not null; -1 = no such rule.
     * Presence is tracked in a 32-bit mask, so a schema has at most 32 fields. */
    int one_of_a, one_of_b;
    const char *one_of_msg;
    int one_of_guess;
    /* when field when_field equals when_equals, when_req_a (and _b) are required; -1 = none */
    int when_field;
    const char *when_equals;
    int when_req_a, when_req_b;
    int when_guess;
};

typedef struct {
    const char *name;
    const ep_schema *schema; /* NULL: any object, forwarded as sent */
    int has_idem;
    size_t max_bytes;        /* any object: the encoded size cap */
    int max_bytes_guess;
} ep_op;

#define FIELD(nm, ty, fl) \
    .name = nm, .jkey = "\"" nm "\":", .nlen = sizeof(nm) - 1, .jlen = sizeof(nm) + 2, .type = (ty), .flags = (fl)
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The tables: generated from lua/endaoment/partner/schema.lua. */
#include "core_schema.h"

/* ---- the walker ---- */

/*
 * The scalars come first and are all that is zeroed per call: the context
 * has its own init (ep_ctx_init) and a warning is written before it is read
 * (nwarn). Zeroing the whole of it, 8 KiB, was a third of prepare's
 * instructions and an eighth of L1 per call.
 */
typedef struct {
    int strict;
    int idem_first;     /* the key was not in the body: written before the first field */
    const char *idem;   /* the key used (into a Lua string, or idem_buf) */
    size_t idem_len;
    char idem_buf[37];
    const char *user_id; /* trimmed top-level partnerUserIdentifier, into the body's string */
    size_t user_id_len;
    int have_inbound;
    uint64_t inbound;
    uint64_t grants_sum;
    int grants_overflow;
    int nwarn;           /* guessed rules broken (not strict): reported, not refused */
    int warn_dropped;    /* more than EP_MAX_WARN */
    ep_ctx c;            /* not zeroed: ep_ctx_init */
    struct {
        char path[128];
        char rule[12];
        char msg[232];
    } warn[EP_MAX_WARN];
} pctx;

/* Copies src into dst, cut to fit (a warning's text is for people). */
static void copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);

    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/*
 * A broken rule. A documented one (or any, with strict) refuses: -1 with the
 * error in p->c. A guessed one becomes a warning: 1, and the caller sends
 * the value as given.
 */
static int broken(pctx *p, int guess, const char *rule, const char *fmt, ...)
{
    char m[EP_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    ep_fail(&p->c, "%s", m);
    if (!guess || p->strict)
        return -1;
    p->c.kind = NULL;
    if (p->nwarn >= EP_MAX_WARN) {
        p->warn_dropped++;
        return 1;
    }
    copy_cut(p->warn[p->nwarn].path, sizeof p->warn[0].path, p->c.path);
    copy_cut(p->warn[p->nwarn].rule, sizeof p->warn[0].rule, rule);
    copy_cut(p->warn[p->nwarn].msg, sizeof p->warn[0].msg, p->c.msg);
    p->nwarn++;
    return 1;
}

static int walk_object(pctx *p, int idx, const ep_schema *s, int root);
static int walk_field(pctx *p, const ep_field *f, int idx);

static int find_field(const ep_schema *s, const char *k, size_t klen)
{
    int i;

    for (i = 0; i < s->nfields; i++) {
        const ep_field *f = &s->fields[i];
        if (f->nlen == klen && f->name[0] == k[0] && memcmp(f->name, k, klen) == 0)
            return i;
    }
    return -1;
}

static int fail_type(pctx *p, int idx, const char *what)
{
    char d[32];

    ep_describe_type(p->c.L, idx, d, sizeof d);
    return ep_fail(&p->c, "must be %s (got %s)", what, d);
}

static int put_raw_quoted(pctx *p, const char *s, size_t len)
{
    strbuf_t *sb = p->c.sb;

    if (strbuf_reserve(sb, len + 2) != STRBUF_OK)
        return ep_oom(&p->c);
    strbuf_putc_unchecked(sb, '"');
    strbuf_append_unchecked(sb, s, len);
    strbuf_putc_unchecked(sb, '"');
    return 0;
}

static int put_lit(pctx *p, const char *s, size_t len)
{
    return strbuf_append(p->c.sb, s, len) != STRBUF_OK ? ep_oom(&p->c) : 0;
}

typedef int (*ep_check_fn)(const char *s, size_t len, char *msg, size_t cap);

/*
 * A string checked by a validator whose accepted alphabet needs no JSON
 * escaping. When the check is a guess and fails, the string is sent as
 * given, escaped as any string.
 */
static int put_checked_raw(pctx *p, const ep_field *f, int idx, ep_check_fn check)
{
    char msg[EP_MSG_MAX];
    size_t len;
    const char *s;

    if (lua_type(p->c.L, idx) != LUA_TSTRING)
        return fail_type(p, idx, "a string");
    s = lua_tolstring(p->c.L, idx, &len);
    if (check(s, len, msg, sizeof msg)) {
        if (broken(p, f->guess & G_FORMAT, "format", "%s", msg) < 0)
            return -1;
        return ep_put_string(&p->c, s, len, NULL);
    }
    return put_raw_quoted(p, s, len);
}

static int walk_array(pctx *p, const ep_field *f, int idx)
{
    lua_State *L = p->c.L;
    size_t n = 0, maxk = 0, i;

    if (++p->c.depth > EP_MAX_DEPTH)
        return ep_fail(&p->c, "is nested more than %d levels deep", EP_MAX_DEPTH);
    if (!lua_checkstack(L, 4))
        return ep_oom(&p->c);

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t k = 0;
#if EPARTNER_HAVE_INTEGER
        if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1)
            k = (size_t)lua_tointeger(L, -2);
#else
        if (lua_type(L, -2) == LUA_TNUMBER) {
            double d = (double)lua_tonumber(L, -2);
            if (d >= 1 && d < EP_SAFE_INT_LIMIT && (double)(uint64_t)d == d)
                k = (size_t)d;
        }
#endif
        if (k == 0) {
            char d[72];
            ep_describe_value(L, -2, d, sizeof d);
            return ep_fail(&p->c, "must be an array (found key %s)", d);
        }
        n++;
        if (k > maxk)
            maxk = k;
        lua_pop(L, 1);
    }
    if (n != maxk)
        return ep_fail(&p->c, "must be an array without holes (%zu items but index %zu)", n, maxk);
    if (f->min && n < f->min &&
        broken(p, f->guess & G_ITEMS, "items", "must contain at least %u %s%s", (unsigned)f->min, f->noun,
               f->min == 1 ? "" : "s") < 0)
        return -1;
    if (f->max && n > f->max &&
        broken(p, f->guess & G_ITEMS, "items", "must contain at most %u %s%s", (unsigned)f->max, f->noun,
               f->max == 1 ? "" : "s") < 0)
        return -1;

    if (strbuf_putc(p->c.sb, '[') != STRBUF_OK)
        return ep_oom(&p->c);
    for (i = 1; i <= n; i++) {
        if (i > 1 && strbuf_putc(p->c.sb, ',') != STRBUF_OK)
            return ep_oom(&p->c);
        lua_rawgeti(L, idx, (int)i);
        ep_seg_index(&p->c, i);
        if (walk_field(p, f->item, lua_gettop(L)))
            return -1;
        p->c.nseg--;
        lua_pop(L, 1);
    }
    if (strbuf_putc(p->c.sb, ']') != STRBUF_OK)
        return ep_oom(&p->c);

    if (f->tag == TAG_GRANTS && p->have_inbound && (p->grants_overflow || p->grants_sum > p->inbound)) {
        char total[21], inbound[21];
        int r;
        ep_u64_to_str(p->inbound, inbound);
        if (p->grants_overflow) {
            r = broken(p, f->guess & G_SUM, "sum",
                       "total more than 18446744073709551615 micro-dollars, more than the inbound transfer's %s",
                       inbound);
        } else {
            ep_u64_to_str(p->grants_sum, total);
            r = broken(p, f->guess & G_SUM, "sum", "total %s micro-dollars, more than the inbound transfer's %s",
                       total, inbound);
        }
        if (r < 0)
            return -1;
    }
    p->c.depth--;
    return 0;
}

static int walk_number(pctx *p, const ep_field *f, int idx)
{
    lua_State *L = p->c.L;
    double d;
    char got[40];

    if (lua_type(L, idx) != LUA_TNUMBER)
        return fail_type(p, idx, "a number");
#if EPARTNER_HAVE_INTEGER
    if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        if (((f->flags & F_POS) && i <= 0) || ((f->flags & F_NONNEG) && i < 0)) {
            ep_describe_value(L, idx, got, sizeof got);
            if (broken(p, f->guess & G_RANGE, "range", "must be %s (got %s)",
                       (f->flags & F_POS) ? "greater than 0" : "at least 0", got) < 0)
                return -1;
        }
        return ep_put_number(&p->c, idx);
    }
#endif
    d = (double)lua_tonumber(L, idx);
    if (d != d || d > DBL_MAX || d < -DBL_MAX) {
        ep_describe_value(L, idx, got, sizeof got);
        return ep_fail(&p->c, "must be a finite number (got %s)", got);
    }
    if (((f->flags & F_POS) && !(d > 0)) || ((f->flags & F_NONNEG) && !(d >= 0))) {
        ep_describe_value(L, idx, got, sizeof got);
        if (broken(p, f->guess & G_RANGE, "range", "must be %s (got %s)",
                   (f->flags & F_POS) ? "greater than 0" : "at least 0", got) < 0)
            return -1;
    }
    return ep_put_number(&p->c, idx);
}

static int walk_field(pctx *p, const ep_field *f, int idx)
{
    lua_State *L = p->c.L;
    char msg[EP_MSG_MAX];
    const char *s;
    size_t len;
    int t = lua_type(L, idx);

    if ((f->flags & F_NULL) && ep_is_null(L, idx))
        return put_lit(p, "null", 4);

    switch (f->type) {
    case T_STRING: {
        size_t nchars;
        if (t != LUA_TSTRING)
            return fail_type(p, idx, f->flags & F_NULL ? "a string or null" : "a string");
        s = lua_tolstring(L, idx, &len);
        if (len == 0 && (f->flags & F_NONEMPTY) && broken(p, f->guess & G_NONEMPTY, "nonempty", "must not be empty") < 0)
            return -1;
        if (ep_put_string(&p->c, s, len, &nchars))
            return -1;
        if (f->max && nchars > f->max &&
            broken(p, f->guess & G_MAX, "max", "must be at most %u characters (got %zu)", (unsigned)f->max, nchars) < 0)
            return -1;
        return 0;
    }
    case T_PARTNER_ID: {
        const char *out;
        size_t outlen;
        if (t != LUA_TSTRING)
            return fail_type(p, idx, "a string");
        s = lua_tolstring(L, idx, &len);
        if (ep_check_partner_id(s, len, &out, &outlen, msg, sizeof msg)) {
            if (broken(p, f->guess & G_FORMAT, "format", "%s", msg) < 0)
                return -1;
            return ep_put_string(&p->c, s, len, NULL);
        }
        if (f->tag == TAG_USER_ID) {
            p->user_id = out;
            p->user_id_len = outlen;
        }
        return ep_put_string(&p->c, out, outlen, NULL);
    }
    case T_UUID:
    case T_IDEM: {
        char got[64];
        if (t != LUA_TSTRING)
            return fail_type(p, idx, f->flags & F_NULL ? "a UUID or null" : "a UUID");
        s = lua_tolstring(L, idx, &len);
        if (!ep_is_uuid(s, len)) {
            ep_quote(s, len, got, sizeof got);
            return ep_fail(&p->c, "must be a UUID like \"2b8108d8-30fc-4c62-9b93-07ee1f8b8455\" (got %s)", got);
        }
        if (f->type == T_IDEM) {
            p->idem = s;
            p->idem_len = len;
        }
        return put_raw_quoted(p, s, len);
    }
    case T_MICRO: {
        uint64_t v;
        if (ep_micro_from_lua(L, idx, 0, &v, msg, sizeof msg))
            return ep_fail(&p->c, "%s", msg);
        if (f->tag == TAG_INBOUND_AMOUNT) {
            p->inbound = v;
            p->have_inbound = 1;
        } else if (f->tag == TAG_GRANT_AMOUNT) {
            if (v > UINT64_MAX - p->grants_sum)
                p->grants_overflow = 1;
            else
                p->grants_sum += v;
        }
        /* A valid string is canonical digits already: sent as given, not formatted again. */
        if (t == LUA_TSTRING) {
            s = lua_tolstring(L, idx, &len);
            return put_raw_quoted(p, s, len);
        }
        return ep_put_u64(&p->c, v, 1);
    }
    case T_TIMESTAMP:
        return put_checked_raw(p, f, idx, ep_check_timestamp);
    case T_COUNTRY:
        return put_checked_raw(p, f, idx, ep_check_country);
    case T_TICKER:
        return put_checked_raw(p, f, idx, ep_check_ticker);
    case T_EIN:
        return put_checked_raw(p, f, idx, ep_check_ein);
    case T_EMAIL:
        if (t != LUA_TSTRING)
            return fail_type(p, idx, "a string");
        s = lua_tolstring(L, idx, &len);
        if (ep_check_email(s, len, msg, sizeof msg))
            return ep_fail(&p->c, "%s", msg);
        return ep_put_string(&p->c, s, len, NULL);
    case T_ENUM: {
        const char *const *ch;
        char got[64];
        if (t != LUA_TSTRING)
            return fail_type(p, idx, "a string");
        s = lua_tolstring(L, idx, &len);
        for (ch = f->choices; *ch; ch++)
            if (strlen(*ch) == len && memcmp(*ch, s, len) == 0)
                return put_raw_quoted(p, s, len);
        ep_quote(s, len, got, sizeof got);
        {
            /* "one of \"A\", \"B\"" from the schema, so the message cannot drift from the rule */
            char list[128];
            size_t o = 0;
            list[0] = '\0';
            for (ch = f->choices; *ch && o + strlen(*ch) + 5 < sizeof list; ch++) {
                size_t n = strlen(*ch);
                if (ch != f->choices) {
                    memcpy(list + o, ", ", 2);
                    o += 2;
                }
                list[o++] = '"';
                memcpy(list + o, *ch, n);
                o += n;
                list[o++] = '"';
                list[o] = '\0';
            }
            return ep_fail(&p->c, "must be one of %s (got %s)", list, got);
        }
    }
    case T_BOOL:
        if (t != LUA_TBOOLEAN)
            return fail_type(p, idx, "a boolean");
        return lua_toboolean(L, idx) ? put_lit(p, "true", 4) : put_lit(p, "false", 5);
    case T_NUMBER:
        return walk_number(p, f, idx);
    case T_OBJECT:
        if (t != LUA_TTABLE)
            return fail_type(p, idx, "an object (a table with string keys)");
        return walk_object(p, idx, f->schema, 0);
    case T_ARRAY:
        if (t != LUA_TTABLE)
            return fail_type(p, idx, "an array (a table with keys 1..n)");
        return walk_array(p, f, idx);
    default:
        return ep_fail(&p->c, "has an unsupported schema type");
    }
}

static int walk_object(pctx *p, int idx, const ep_schema *s, int root)
{
    lua_State *L = p->c.L;
    strbuf_t *sb = p->c.sb;
    int base, i, unknown = 0, first = 1;
    unsigned present = 0;

    if (++p->c.depth > EP_MAX_DEPTH)
        return ep_fail(&p->c, "is nested more than %d levels deep", EP_MAX_DEPTH);
    if (ep_has_array_mt(L, idx))
        return ep_fail(&p->c, "must be an object (got a table marked with array_mt)");
    if (!lua_checkstack(L, s->nfields + 6))
        return ep_oom(&p->c);

    /*
     * One pass over the table: each known field's value lands in its own
     * stack slot (base+1+i), so the fields can then be handled in schema
     * order without a lookup per field.
     */
    base = lua_gettop(L);
    lua_settop(L, base + s->nfields);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen);
            int j = find_field(s, k, klen);
            if (j >= 0) {
                lua_replace(L, base + 1 + j);
                continue;
            }
            unknown++;
            lua_pop(L, 1);
        } else {
            char d[72];
            ep_describe_value(L, -2, d, sizeof d);
            return ep_fail(&p->c, "must be an object with string keys (found key %s)", d);
        }
    }

    if (strbuf_putc(sb, '{') != STRBUF_OK)
        return ep_oom(&p->c);
    if (root && p->idem_first) {
        if (put_lit(p, "\"idempotencyKey\":", 17) || put_raw_quoted(p, p->idem, p->idem_len))
            return -1;
        first = 0;
    }
    for (i = 0; i < s->nfields; i++) {
        const ep_field *f = &s->fields[i];
        int vi = base + 1 + i;

        ep_seg_key(&p->c, f->name, f->nlen);
        if (lua_isnil(L, vi)) {
            if ((f->flags & F_REQ) && broken(p, f->guess & G_REQ, "required", "is required") < 0)
                return -1;
            p->c.nseg--;
            continue;
        }
        if (strbuf_reserve(sb, (size_t)f->jlen + 1) != STRBUF_OK)
            return ep_oom(&p->c);
        if (!first)
            strbuf_putc_unchecked(sb, ',');
        first = 0;
        strbuf_append_unchecked(sb, f->jkey, f->jlen);
        if (walk_field(p, f, vi))
            return -1;
        p->c.nseg--;
        if (!ep_is_null(L, vi))
            present |= 1u << i;
    }
    if (s->one_of_msg && !(present & ((1u << s->one_of_a) | (1u << s->one_of_b))) &&
        broken(p, s->one_of_guess, "one_of", "%s", s->one_of_msg) < 0)
        return -1;
    if (s->when_field >= 0) {
        int wv = base + 1 + s->when_field;
        size_t wl;
        const char *ws = lua_type(L, wv) == LUA_TSTRING ? lua_tolstring(L, wv, &wl) : NULL;
        if (ws && wl == strlen(s->when_equals) && memcmp(ws, s->when_equals, wl) == 0) {
            int need[2], k;
            need[0] = s->when_req_a;
            need[1] = s->when_req_b;
            for (k = 0; k < 2; k++) {
                const ep_field *rf;
                if (need[k] < 0 || !lua_isnil(L, base + 1 + need[k]))
                    continue;
                rf = &s->fields[need[k]];
                ep_seg_key(&p->c, rf->name, rf->nlen);
                if (broken(p, s->when_guess, "required", "is required when %s is \"%s\"",
                           s->fields[s->when_field].name, s->when_equals) < 0)
                    return -1;
                p->c.nseg--;
            }
        }
    }

    if (unknown) {
        /* after the known fields, so a typo in a known field is what gets reported */
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen);
            if (find_field(s, k, klen) >= 0) {
                lua_pop(L, 1);
                continue;
            }
            ep_seg_key(&p->c, k, klen);
            if (p->strict)
                return ep_fail(&p->c, "is an unknown field (strict mode)");
            if (!first && strbuf_putc(sb, ',') != STRBUF_OK)
                return ep_oom(&p->c);
            first = 0;
            if (ep_put_string(&p->c, k, klen, NULL))
                return -1;
            if (strbuf_putc(sb, ':') != STRBUF_OK)
                return ep_oom(&p->c);
            if (ep_encode_value(&p->c, lua_gettop(L)))
                return -1;
            p->c.nseg--;
            lua_pop(L, 1);
        }
    }
    if (strbuf_putc(sb, '}') != STRBUF_OK)
        return ep_oom(&p->c);
    lua_settop(L, base);
    p->c.depth--;
    return 0;
}

/* ---- entry points ---- */

/* info.warnings = { {field=, rule=, message=}, ... } into the table on top. */
static void push_warnings(lua_State *L, pctx *p)
{
    int i;

    lua_createtable(L, p->nwarn, 0);
    for (i = 0; i < p->nwarn; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, p->warn[i].path);
        lua_setfield(L, -2, "field");
        lua_pushstring(L, p->warn[i].rule);
        lua_setfield(L, -2, "rule");
        lua_pushstring(L, p->warn[i].msg);
        lua_setfield(L, -2, "message");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "warnings");
}

static int push_invalid(lua_State *L, const char *field, const char *msg)
{
    lua_pushnil(L);
    ep_push_error(L, "invalid", msg, field);
    return 2;
}

static int do_prepare(lua_State *L, int want_json)
{
    const char *opname = luaL_checkstring(L, 1);
    const ep_op *op = NULL;
    strbuf_t *sb;
    pctx p;
    size_t i;
    int rc;

    for (i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(ops[i].name, opname) == 0)
            op = &ops[i];
    if (!op)
        return luaL_argerror(L, 1, lua_pushfstring(L, "unknown operation '%s'", opname));
    if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
        return luaL_argerror(L, 3, "options table or nil expected");
    lua_settop(L, 3);

    memset(&p, 0, offsetof(pctx, c));
    if (lua_istable(L, 3)) {
        lua_pushliteral(L, "strict");
        lua_rawget(L, 3);
        if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
            return luaL_argerror(L, 3, "opts.strict must be a boolean");
        p.strict = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }

    if (!lua_istable(L, 2)) {
        char d[32], msg[96];
        ep_describe_type(L, 2, d, sizeof d);
        snprintf(msg, sizeof msg, "body must be a table (got %s)", d);
        return push_invalid(L, "body", msg);
    }

    if (op->has_idem) {
        lua_pushliteral(L, "idempotencyKey");
        lua_rawget(L, 2);
        if (lua_isnil(L, -1)) {
            /* 4: opts.idempotency_key, kept on the stack so p.idem stays valid */
            lua_pop(L, 1);
            if (lua_istable(L, 3)) {
                lua_pushliteral(L, "idempotency_key");
                lua_rawget(L, 3);
            } else {
                lua_pushnil(L);
            }
            if (!lua_isnil(L, -1)) {
                size_t len = 0;
                const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
                if (!s || !ep_is_uuid(s, len))
                    return push_invalid(L, "idempotency_key", "idempotency_key must be a UUID");
                p.idem = s;
                p.idem_len = len;
                p.idem_first = 1;
            } else if (want_json) {
                ep_uuid4(p.idem_buf);
                p.idem = p.idem_buf;
                p.idem_len = 36;
                p.idem_first = 1;
            }
        } else if (lua_istable(L, 3)) {
            /*
             * Both keys given: silently preferring one would send a key the
             * caller did not mean for a retry, and a retry under another key
             * is a second grant. Equal keys (byte for byte) are fine; the
             * body's key itself is validated in schema order by the walker.
             */
            lua_pushliteral(L, "idempotency_key");
            lua_rawget(L, 3);
            if (!lua_isnil(L, -1)) {
                size_t blen = 0, olen = 0;
                const char *b = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &blen) : NULL;
                const char *o = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &olen) : NULL;
                if (!o || !ep_is_uuid(o, olen))
                    return push_invalid(L, "idempotency_key", "idempotency_key must be a UUID");
                if (b && (blen != olen || memcmp(b, o, olen) != 0))
                    return push_invalid(L, "idempotencyKey",
                                        "idempotencyKey in the body differs from "
                                        "opts.idempotency_key: give the key once, or the same "
                                        "key in both");
            }
            lua_pop(L, 1);
        }
        /* else: the body's key is validated and reported in schema order by the walker */
    }

    sb = ep_buffer_acquire(L);
    ep_ctx_init(&p.c, L, sb, "body");
    if (op->schema) {
        rc = walk_object(&p, 2, op->schema, 1);
    } else {
        /* A body whose schema is not public: any object, forwarded as sent. */
        rc = ep_has_array_mt(L, 2) ? ep_fail(&p.c, "must be an object (got a table marked with array_mt)")
                                   : ep_encode_value(&p.c, 2);
        if (rc == 0 && sb->len > op->max_bytes &&
            broken(&p, op->max_bytes_guess, "max", "is %zu bytes of JSON, more than %zu", sb->len, op->max_bytes) < 0)
            rc = -1;
    }
    if (rc) {
        ep_buffer_release(L, sb);
        lua_pushnil(L);
        ep_push_ctx_error(&p.c);
        return 2;
    }
    if (!want_json) {
        ep_buffer_release(L, sb);
        lua_pushboolean(L, 1);
        if (p.nwarn == 0)
            return 1;
        lua_createtable(L, 0, 1);
        push_warnings(L, &p);
        return 2;
    }
    lua_pushlstring(L, sb->data, sb->len);
    ep_buffer_release(L, sb);
    lua_createtable(L, 0, 3);
    if (p.nwarn)
        push_warnings(L, &p);
    if (p.idem) {
        lua_pushlstring(L, p.idem, p.idem_len);
        lua_setfield(L, -2, "idempotency_key");
    }
    if (p.user_id) {
        lua_pushlstring(L, p.user_id, p.user_id_len);
        lua_setfield(L, -2, "partner_user_identifier");
    }
    return 2;
}

int ep_l_prepare(lua_State *L)
{
    return do_prepare(L, 1);
}

int ep_l_validate(lua_State *L)
{
    return do_prepare(L, 0);
}
