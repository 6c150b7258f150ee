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
#include <string.h>

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
    unsigned char type, flags, tag;
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
};

#define FIELD(nm, ty, fl) \
    .name = nm, .jkey = "\"" nm "\":", .nlen = sizeof(nm) - 1, .jlen = sizeof(nm) + 2, .type = (ty), .flags = (fl)
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define SCHEMA(f) {f, COUNT(f), -1, -1, NULL}

/* ---- schemas (from API-NOTES.md); listed order = validation and output order ---- */

static const ep_field address_fields[] = {
    {FIELD("line1", T_STRING, F_REQ | F_NONEMPTY), .max = 255},
    {FIELD("line2", T_STRING, 0), .max = 255},
    {FIELD("city", T_STRING, F_REQ | F_NONEMPTY), .max = 255},
    {FIELD("state", T_STRING, 0), .max = 255},
    {FIELD("zip", T_STRING, 0), .max = 255},
    {FIELD("country", T_COUNTRY, F_REQ)},
};
static const ep_schema address_schema = SCHEMA(address_fields);

static const ep_field provision_user_fields[] = {
    {FIELD("partnerUserIdentifier", T_PARTNER_ID, F_REQ), .tag = TAG_USER_ID},
    {FIELD("firstName", T_STRING, F_REQ | F_NONEMPTY), .max = 255},
    {FIELD("lastName", T_STRING, F_REQ | F_NONEMPTY), .max = 255},
    {FIELD("email", T_EMAIL, F_REQ)},
    {FIELD("address", T_OBJECT, F_REQ), .schema = &address_schema},
};

static const char *const fund_types[] = {"Private", "Transparent", NULL};

static const ep_field create_fund_fields[] = {
    {FIELD("name", T_STRING, F_REQ | F_NONEMPTY), .max = 255},
    {FIELD("partnerAccountIdentifier", T_PARTNER_ID, F_REQ)},
    {FIELD("description", T_STRING, 0)},
    {FIELD("type", T_ENUM, 0), .choices = fund_types},
    {FIELD("partnerUserIdentifier", T_PARTNER_ID, 0), .tag = TAG_USER_ID},
};

static const ep_field cash_donation_fields[] = {
    {FIELD("receivingFundId", T_UUID, F_REQ)},
    {FIELD("idempotencyKey", T_IDEM, 0)},
    {FIELD("pledgedAmountMicroDollars", T_MICRO, F_REQ)},
    {FIELD("partnerOperationId", T_STRING, F_REQ | F_NONEMPTY), .max = 36},
    {FIELD("partnerUserIdentifier", T_PARTNER_ID, 0), .tag = TAG_USER_ID},
};

static const ep_field lot_fields[] = {
    {FIELD("numberOfShares", T_NUMBER, F_REQ | F_POS)},
    {FIELD("purchasePrice", T_NUMBER, F_REQ | F_NONNEG)},
    {FIELD("purchaseDate", T_TIMESTAMP, F_REQ)},
    {FIELD("employeeStockPlan", T_STRING, 0), .max = 255},
    {FIELD("lotId", T_STRING, 0), .max = 255},
};
static const ep_schema lot_schema = SCHEMA(lot_fields);
static const ep_field lot_item = {.type = T_OBJECT, .schema = &lot_schema};

static const ep_field stock_fields[] = {
    {FIELD("ticker", T_TICKER, F_REQ)},
    {FIELD("shares", T_NUMBER, F_REQ | F_POS)},
    {FIELD("lots", T_ARRAY, 0), .item = &lot_item, .noun = "lot"},
};
static const ep_schema stock_schema = SCHEMA(stock_fields);

static const ep_field stock_donation_fields[] = {
    {FIELD("receivingFundId", T_UUID, F_REQ)},
    {FIELD("idempotencyKey", T_IDEM, 0)},
    {FIELD("donationValueMicroDollars", T_MICRO, F_REQ)},
    {FIELD("partnerOperationId", T_STRING, F_REQ | F_NONEMPTY), .max = 36},
    {FIELD("partnerUserIdentifier", T_PARTNER_ID, 0), .tag = TAG_USER_ID},
    {FIELD("stockPledgeData", T_OBJECT, F_REQ), .schema = &stock_schema},
};

static const ep_field inbound_fields[] = {
    {FIELD("amountMicroDollars", T_MICRO, F_REQ), .tag = TAG_INBOUND_AMOUNT},
    {FIELD("partnerFundingTransferId", T_STRING, F_REQ | F_NONEMPTY), .max = 255},
    {FIELD("sourcePartnerAccountIdentifier", T_PARTNER_ID, F_REQ)},
    {FIELD("destinationPartnerAccountIdentifier", T_PARTNER_ID, F_REQ)},
    {FIELD("settledAtUtc", T_TIMESTAMP, F_REQ)},
};
static const ep_schema inbound_schema = SCHEMA(inbound_fields);

static const ep_field grant_fields[] = {
    {FIELD("amountMicroDollars", T_MICRO, F_REQ), .tag = TAG_GRANT_AMOUNT},
    {FIELD("destinationOrgId", T_UUID, F_NULL)},
    {FIELD("destinationSubprojectId", T_UUID, F_NULL)},
    {FIELD("specialInstructions", T_STRING, F_NULL)},
    {FIELD("hideMyInfoFromOrg", T_BOOL, 0)},
};
static const ep_schema grant_schema = {grant_fields, COUNT(grant_fields), 1, 2,
                                       "must have a destinationOrgId or destinationSubprojectId"};
static const ep_field grant_item = {.type = T_OBJECT, .schema = &grant_schema};

static const ep_field submit_grant_fields[] = {
    {FIELD("idempotencyKey", T_IDEM, 0)},
    {FIELD("originFundId", T_UUID, F_REQ)},
    {FIELD("inboundCustodianTransfer", T_OBJECT, F_REQ), .schema = &inbound_schema},
    {FIELD("grants", T_ARRAY, F_REQ), .tag = TAG_GRANTS, .min = 1, .max = 50, .item = &grant_item, .noun = "grant"},
};

static const ep_field missing_org_fields[] = {
    {FIELD("name", T_STRING, F_REQ | F_NONEMPTY), .max = 255},
    {FIELD("ein", T_EIN, 0)},
    {FIELD("website", T_STRING, 0), .max = 255},
    {FIELD("idempotencyKey", T_IDEM, 0)},
};

static const ep_field uuid_item = {.type = T_UUID};

static const ep_field async_grant_fields[] = {
    {FIELD("idempotencyKey", T_IDEM, 0)},
    {FIELD("originFundId", T_UUID, F_REQ)},
    {FIELD("destinationOrgId", T_UUID, F_REQ)},
    {FIELD("destinationSubprojectId", T_UUID, 0)},
    {FIELD("requestedAmount", T_MICRO, F_REQ)},
    {FIELD("purpose", T_STRING, F_REQ | F_NONEMPTY), .max = 511},
    {FIELD("recommender", T_STRING, 0), .max = 255},
    {FIELD("specialInstructions", T_STRING, 0)},
    {FIELD("shareMyEmail", T_BOOL, 0)},
    {FIELD("recommendationIds", T_ARRAY, 0), .item = &uuid_item, .noun = "recommendation id"},
};

typedef struct {
    const char *name;
    ep_schema schema;
    int has_idem;
} ep_op;

static const ep_op ops[] = {
    {"provision_user", SCHEMA(provision_user_fields), 0},
    {"create_fund", SCHEMA(create_fund_fields), 0},
    {"record_cash_donation", SCHEMA(cash_donation_fields), 1},
    {"record_stock_donation", SCHEMA(stock_donation_fields), 1},
    {"submit_grant", SCHEMA(submit_grant_fields), 1},
    {"report_missing_org", SCHEMA(missing_org_fields), 1},
    {"create_async_grant", SCHEMA(async_grant_fields), 1},
};

/* ---- the walker ---- */

typedef struct {
    ep_ctx c;
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
} pctx;

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

/* A string checked by a validator whose accepted alphabet needs no JSON escaping. */
static int put_checked_raw(pctx *p, int idx, ep_check_fn check)
{
    char msg[EP_MSG_MAX];
    size_t len;
    const char *s;

    if (lua_type(p->c.L, idx) != LUA_TSTRING)
        return fail_type(p, idx, "a string");
    s = lua_tolstring(p->c.L, idx, &len);
    if (check(s, len, msg, sizeof msg))
        return ep_fail(&p->c, "%s", msg);
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
    if (f->min && n < f->min)
        return ep_fail(&p->c, "must contain at least %u %s%s", (unsigned)f->min, f->noun, f->min == 1 ? "" : "s");
    if (f->max && n > f->max)
        return ep_fail(&p->c, "must contain at most %u %s%s", (unsigned)f->max, f->noun, f->max == 1 ? "" : "s");

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
        ep_u64_to_str(p->inbound, inbound);
        if (p->grants_overflow)
            return ep_fail(&p->c, "total more than 18446744073709551615 micro-dollars, more than the inbound transfer's %s",
                           inbound);
        ep_u64_to_str(p->grants_sum, total);
        return ep_fail(&p->c, "total %s micro-dollars, more than the inbound transfer's %s", total, inbound);
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
            return ep_fail(&p->c, "must be %s (got %s)", (f->flags & F_POS) ? "greater than 0" : "at least 0", got);
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
        return ep_fail(&p->c, "must be %s (got %s)", (f->flags & F_POS) ? "greater than 0" : "at least 0", got);
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
        if (len == 0 && (f->flags & F_NONEMPTY))
            return ep_fail(&p->c, "must not be empty");
        if (ep_put_string(&p->c, s, len, &nchars))
            return -1;
        if (f->max && nchars > f->max)
            return ep_fail(&p->c, "must be at most %u characters (got %zu)", (unsigned)f->max, nchars);
        return 0;
    }
    case T_PARTNER_ID: {
        const char *out;
        size_t outlen;
        if (t != LUA_TSTRING)
            return fail_type(p, idx, "a string");
        s = lua_tolstring(L, idx, &len);
        if (ep_check_partner_id(s, len, &out, &outlen, msg, sizeof msg))
            return ep_fail(&p->c, "%s", msg);
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
        return ep_put_u64(&p->c, v, 1);
    }
    case T_TIMESTAMP:
        return put_checked_raw(p, idx, ep_check_timestamp);
    case T_COUNTRY:
        return put_checked_raw(p, idx, ep_check_country);
    case T_TICKER:
        return put_checked_raw(p, idx, ep_check_ticker);
    case T_EIN:
        return put_checked_raw(p, idx, ep_check_ein);
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
            if (f->flags & F_REQ)
                return ep_fail(&p->c, "is required");
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
    if (s->one_of_msg && !(present & ((1u << s->one_of_a) | (1u << s->one_of_b))))
        return ep_fail(&p->c, "%s", s->one_of_msg);

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

    memset(&p, 0, sizeof p);
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
    rc = walk_object(&p, 2, &op->schema, 1);
    if (rc) {
        ep_buffer_release(L, sb);
        lua_pushnil(L);
        ep_push_ctx_error(&p.c);
        return 2;
    }
    if (!want_json) {
        ep_buffer_release(L, sb);
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushlstring(L, sb->data, sb->len);
    ep_buffer_release(L, sb);
    lua_createtable(L, 0, 2);
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
