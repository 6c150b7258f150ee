/*
 * Scalar validators. They never touch the output buffer and never raise:
 * each returns 0, or -1 with a "must ..." sentence the caller prefixes with
 * a field path (prepare) or returns as is (the standalone core.* checks).
 */
#include "core.h"

#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define QUOTE_MAX 64

static const char MICRO_POSITIVE[] =
    "must be a positive integer number of micro-dollars as a string of digits";
static const char MICRO_NONNEG[] =
    "must be a non-negative integer number of micro-dollars as a string of digits";
static const char DOLLARS_WHAT[] =
    "must be a dollar amount as a string of digits with an optional '.' and at most 6 decimals, like \"125.50\"";

static int fail(char *msg, size_t cap, const char *fmt, ...) STRBUF_PRINTF(3, 4);

static int fail(char *msg, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (cap) {
        va_start(ap, fmt);
        vsnprintf(msg, cap, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* 1 for a hex digit: the UUID check runs for every id of every call. */
static const unsigned char hex_class[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
};

static int is_upper(unsigned char c)
{
    return c >= 'A' && c <= 'Z';
}

static int is_alnum(unsigned char c)
{
    return is_digit(c) || is_upper(c) || (c >= 'a' && c <= 'z');
}

size_t ep_u64_to_str(uint64_t v, char out[21])
{
    char tmp[21];
    size_t n = 0, i;

    do {
        tmp[n++] = (char)('0' + (v % 10));
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

/*
 * Bad values are echoed in messages, which end up in logs: show at most 40
 * bytes, and only printable ASCII, so a message is always one safe line.
 */
void ep_quote(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0, i;

    if (cap < 8) {
        if (cap)
            out[0] = '\0';
        return;
    }
    out[o++] = '"';
    for (i = 0; i < len && i < 40; i++) {
        unsigned char ch = (unsigned char)s[i];
        char tmp[8];
        size_t n;

        if (ch == '"' || ch == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)ch;
            n = 2;
        } else if (ch >= 0x20 && ch < 0x7F) {
            tmp[0] = (char)ch;
            n = 1;
        } else {
            snprintf(tmp, sizeof tmp, "\\x%02X", ch);
            n = 4;
        }
        /* keep room for the closing quote, "..." and the NUL */
        if (o + n + 5 > cap)
            break;
        memcpy(out + o, tmp, n);
        o += n;
    }
    out[o++] = '"';
    if (i < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

void ep_describe_type(lua_State *L, int idx, char *out, size_t cap)
{
    const char *d;

    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL: d = "nil"; break;
    case LUA_TBOOLEAN: d = "a boolean"; break;
    case LUA_TNUMBER: d = "a number"; break;
    case LUA_TSTRING: d = "a string"; break;
    case LUA_TTABLE: d = "a table"; break;
    case LUA_TFUNCTION: d = "a function"; break;
    case LUA_TUSERDATA: d = "a userdata"; break;
    case LUA_TTHREAD: d = "a coroutine"; break;
    case LUA_TLIGHTUSERDATA: d = lua_touserdata(L, idx) == NULL ? "null" : "a light userdata"; break;
    default: d = "an unknown value"; break;
    }
    snprintf(out, cap, "%s", d);
}

static void describe_number(lua_State *L, int idx, char *out, size_t cap)
{
    double d;

#if EPARTNER_HAVE_INTEGER
    if (lua_isinteger(L, idx)) {
        snprintf(out, cap, "%lld", (long long)lua_tointeger(L, idx));
        return;
    }
#endif
    d = (double)lua_tonumber(L, idx);
    if (d != d)
        snprintf(out, cap, "nan");
    else if (d > DBL_MAX)
        snprintf(out, cap, "inf");
    else if (d < -DBL_MAX)
        snprintf(out, cap, "-inf");
    else {
        snprintf(out, cap, "%.14g", d);
#if EPARTNER_HAVE_INTEGER
        /* 5.3+ distinguishes 5.0 from 5: say so, or "got 5, a float" reads as nonsense */
        if (strpbrk(out, ".e,") == NULL) {
            size_t n = strlen(out);
            if (n + 3 <= cap)
                memcpy(out + n, ".0", 3);
        }
#endif
    }
}

void ep_describe_value(lua_State *L, int idx, char *out, size_t cap)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        ep_quote(s, len, out, cap);
        break;
    }
    case LUA_TNUMBER:
        describe_number(L, idx, out, cap);
        break;
    case LUA_TBOOLEAN:
        snprintf(out, cap, "%s", lua_toboolean(L, idx) ? "true" : "false");
        break;
    default:
        ep_describe_type(L, idx, out, cap);
        break;
    }
}

int ep_is_uuid(const char *s, size_t len)
{
    size_t i;

    if (len != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-')
        return 0;
    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            continue;
        if (!hex_class[(unsigned char)s[i]])
            return 0;
    }
    return 1;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

void ep_trim(const char **s, size_t *len)
{
    const char *p = *s;
    size_t n = *len;

    while (n && is_space((unsigned char)p[0])) {
        p++;
        n--;
    }
    while (n && is_space((unsigned char)p[n - 1]))
        n--;
    *s = p;
    *len = n;
}

int ep_check_partner_id(const char *s, size_t len, const char **out, size_t *outlen, char *msg, size_t cap)
{
    size_t i;

    ep_trim(&s, &len);
    *out = s;
    *outlen = len;
    /* Identifiers can be personal data: report lengths and positions, never the value. */
    if (len < 16 || len > 64)
        return fail(msg, cap, "must be 16-64 printable ASCII characters (got %zu)", len);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7E)
            return fail(msg, cap,
                        "must be 16-64 printable ASCII characters (byte 0x%02X at position %zu is not printable ASCII)",
                        c, i + 1);
    }
    return 0;
}

static int two(const char *s)
{
    return (s[0] - '0') * 10 + (s[1] - '0');
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

#define QUOTED (ep_quote(s, len, q, sizeof q), q)

int ep_check_timestamp(const char *s, size_t len, char *msg, size_t cap)
{
    static const char layout[] = "dddd-dd-ddTdd:dd:dd";
    static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    char q[QUOTE_MAX];
    size_t i, pos;
    int year, month, day, dim;

    /* The quote is for a message: made on failure only (QUOTED), not for every valid timestamp. */
    if (len < 20)
        goto bad_format;
    for (i = 0; i < 19; i++) {
        unsigned char c = (unsigned char)s[i];
        if (layout[i] == 'd' ? !is_digit(c) : c != (unsigned char)layout[i])
            goto bad_format;
    }
    pos = 19;
    if (s[pos] == '.') {
        size_t start = ++pos;
        while (pos < len && is_digit((unsigned char)s[pos]))
            pos++;
        if (pos == start || pos - start > 9)
            return fail(msg, cap, "must have 1-9 fractional second digits (got %s)", QUOTED);
    }
    if (pos >= len || s[pos] != 'Z') {
        if (pos < len && (s[pos] == '+' || s[pos] == '-'))
            return fail(msg, cap, "must be in UTC, ending in \"Z\" (got %s)", QUOTED);
        goto bad_format;
    }
    if (pos + 1 != len)
        goto bad_format;

    year = two(s) * 100 + two(s + 2);
    month = two(s + 5);
    day = two(s + 8);
    if (month < 1 || month > 12)
        return fail(msg, cap, "must be a real calendar date (month %02d in %s)", month, QUOTED);
    dim = mdays[month - 1] + (month == 2 && is_leap(year));
    if (day < 1 || day > dim)
        return fail(msg, cap, "must be a real calendar date (day %02d in %s)", day, QUOTED);
    if (two(s + 11) > 23 || two(s + 14) > 59 || two(s + 17) > 59)
        return fail(msg, cap, "must have a time of day between 00:00:00 and 23:59:59 (got %s)", QUOTED);
    return 0;

bad_format:
    return fail(msg, cap, "must be an ISO-8601 UTC timestamp like \"2026-05-04T14:32:01.000Z\" (got %s)", QUOTED);
}

#undef QUOTED

int ep_check_email(const char *s, size_t len, char *msg, size_t cap)
{
    const char *why = NULL;
    const char *at, *d, *end;
    size_t i, llen;
    int dots = 0;

    /* Addresses are personal data: explain the problem without echoing the value. */
    if (len > 254) {
        why = "longer than 254 characters";
        goto bad;
    }
    at = memchr(s, '@', len);
    if (!at) {
        why = "no '@'";
        goto bad;
    }
    llen = (size_t)(at - s);
    if (memchr(at + 1, '@', len - llen - 1)) {
        why = "more than one '@'";
        goto bad;
    }
    if (llen == 0) {
        why = "nothing before the '@'";
        goto bad;
    }
    if (llen > 64) {
        why = "more than 64 characters before the '@'";
        goto bad;
    }
    for (i = 0; i < llen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7F) {
            why = "a space or a non-printable character before the '@'";
            goto bad;
        }
    }
    d = at + 1;
    end = s + len;
    if (d == end) {
        why = "no domain after the '@'";
        goto bad;
    }
    while (d <= end) {
        const char *lab = d;
        size_t n;
        while (d < end && *d != '.')
            d++;
        n = (size_t)(d - lab);
        if (n == 0) {
            why = "an empty label in the domain (a leading, trailing or doubled '.')";
            goto bad;
        }
        if (n > 63) {
            why = "a domain label longer than 63 characters";
            goto bad;
        }
        if (lab[0] == '-' || lab[n - 1] == '-') {
            why = "a domain label that starts or ends with '-'";
            goto bad;
        }
        for (i = 0; i < n; i++)
            if (!is_alnum((unsigned char)lab[i]) && lab[i] != '-') {
                why = "a character other than A-Z, a-z, 0-9, '-' or '.' in the domain";
                goto bad;
            }
        if (d == end)
            break;
        dots++;
        d++; /* past the '.'; a trailing dot leaves d == end and an empty label */
    }
    if (dots == 0) {
        why = "no '.' in the domain";
        goto bad;
    }
    return 0;

bad:
    return fail(msg, cap, "must be an email address like name@example.org (it has %s)", why);
}

int ep_check_ein(const char *s, size_t len, char *msg, size_t cap)
{
    char q[QUOTE_MAX];
    size_t i;
    int ok = 0;

    if (len == 9 || (len == 10 && s[2] == '-')) {
        ok = 1;
        for (i = 0; i < len; i++)
            if (!(len == 10 && i == 2) && !is_digit((unsigned char)s[i]))
                ok = 0;
    }
    if (ok)
        return 0;
    ep_quote(s, len, q, sizeof q);
    return fail(msg, cap, "must be an EIN of 9 digits, optionally written NN-NNNNNNN (got %s)", q);
}

int ep_check_ticker(const char *s, size_t len, char *msg, size_t cap)
{
    char q[QUOTE_MAX];
    size_t i;
    int ok = len >= 1 && len <= 10;

    for (i = 0; ok && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        ok = is_upper(c) || is_digit(c) || c == '.' || c == '-';
    }
    if (ok)
        return 0;
    ep_quote(s, len, q, sizeof q);
    return fail(msg, cap, "must be 1-10 characters of A-Z, 0-9, '.' or '-' (got %s)", q);
}

int ep_check_country(const char *s, size_t len, char *msg, size_t cap)
{
    char q[QUOTE_MAX];

    if (len == 3 && is_upper((unsigned char)s[0]) && is_upper((unsigned char)s[1]) && is_upper((unsigned char)s[2]))
        return 0;
    ep_quote(s, len, q, sizeof q);
    return fail(msg, cap, "must be an ISO 3166-1 alpha-3 country code of 3 uppercase letters like \"USA\" (got %s)", q);
}

int ep_check_header_value(const char *s, size_t len, char *msg, size_t cap)
{
    size_t i;

    /* CR/LF would let a value inject headers; other CTLs are invalid field-value octets. */
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7F)
            return fail(msg, cap, "must not contain control characters (byte 0x%02X at position %zu)", c, i + 1);
    }
    return 0;
}

int ep_check_header_name(const char *s, size_t len, char *msg, size_t cap)
{
    static const char tchar_punct[] = "!#$%&'*+-.^_`|~";
    size_t i;

    if (len == 0)
        return fail(msg, cap, "must not be empty");
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && (c == '\0' || strchr(tchar_punct, c) == NULL))
            return fail(msg, cap, "must be an HTTP token (byte 0x%02X at position %zu is not a token character)", c,
                        i + 1);
    }
    return 0;
}

static int parse_micro_str(const char *s, size_t len, int allow_zero, uint64_t *out, char *msg, size_t cap)
{
    const char *what = allow_zero ? MICRO_NONNEG : MICRO_POSITIVE;
    char q[QUOTE_MAX];
    uint64_t v = 0;
    size_t i;

    /* The quoted value is made only for a message: this runs for every amount of every call. */
    if (len == 0)
        goto bad;
    for (i = 0; i < len; i++)
        if (!is_digit((unsigned char)s[i]))
            goto bad;
    /* "05" might be a typo for "0.5" or "50": refuse to guess with money. */
    if (len > 1 && s[0] == '0') {
        ep_quote(s, len, q, sizeof q);
        return fail(msg, cap, "%s without leading zeros (got %s)", what, q);
    }
    for (i = 0; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (EP_MICRO_MAX - d) / 10) {
            ep_quote(s, len, q, sizeof q);
            return fail(msg, cap, "must be at most 9223372036854775807 micro-dollars (got %s)", q);
        }
        v = v * 10 + d;
    }
    if (v == 0 && !allow_zero) {
        ep_quote(s, len, q, sizeof q);
        return fail(msg, cap, "must be greater than 0 (got %s)", q);
    }
    *out = v;
    return 0;
bad:
    ep_quote(s, len, q, sizeof q);
    return fail(msg, cap, "%s (got %s)", what, q);
}

#if !EPARTNER_HAVE_INTEGER
/*
 * Integral, in [lo, 2^53), as a double: the only numbers 5.1/LuaJIT can
 * hand us as exact integers. Avoids libm, which the module does not link.
 */
static int exact_integer_double(double d, double lo)
{
    return d >= lo && d < EP_SAFE_INT_LIMIT && (double)(uint64_t)d == d;
}
#endif

int ep_micro_from_lua(lua_State *L, int idx, int allow_zero, uint64_t *out, char *msg, size_t cap)
{
    const char *what = allow_zero ? MICRO_NONNEG : MICRO_POSITIVE;
    char d[QUOTE_MAX];

    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return parse_micro_str(s, len, allow_zero, out, msg, cap);
    }
    case LUA_TNUMBER:
#if EPARTNER_HAVE_INTEGER
        if (lua_isinteger(L, idx)) {
            lua_Integer i = lua_tointeger(L, idx);
            if (i >= 0 && !(i == 0 && !allow_zero)) {
                *out = (uint64_t)i;
                return 0;
            }
            describe_number(L, idx, d, sizeof d);
            return fail(msg, cap, "%s (got %s)", what, d);
        }
        describe_number(L, idx, d, sizeof d);
        return fail(msg, cap, "%s (got %s, a float: pass amounts as strings like \"1500000\")", what, d);
#else
        {
            double n = (double)lua_tonumber(L, idx);
            if (exact_integer_double(n, allow_zero ? 0.0 : 1.0)) {
                *out = (uint64_t)n;
                return 0;
            }
            describe_number(L, idx, d, sizeof d);
            return fail(msg, cap, "%s (got %s; numbers are exact only for integers below 2^53: pass amounts as strings)",
                        what, d);
        }
#endif
    default:
        ep_describe_type(L, idx, d, sizeof d);
        return fail(msg, cap, "%s (got %s)", what, d);
    }
}

static int dollars_too_big(char *msg, size_t cap, const char *got)
{
    return fail(msg, cap, "must be at most 9223372036854.775807 dollars (got %s)", got);
}

static int parse_dollars_str(const char *s, size_t len, uint64_t *out, char *msg, size_t cap)
{
    char q[QUOTE_MAX];
    size_t i = 0, ilen, p, fstart = 0, flen = 0;
    uint64_t ip = 0, frac = 0;

    ep_quote(s, len, q, sizeof q);
    while (i < len && is_digit((unsigned char)s[i]))
        i++;
    ilen = i;
    if (ilen == 0)
        return fail(msg, cap, "%s (got %s)", DOLLARS_WHAT, q);
    if (i < len) {
        if (s[i] != '.')
            return fail(msg, cap, "%s (got %s)", DOLLARS_WHAT, q);
        fstart = ++i;
        while (i < len && is_digit((unsigned char)s[i]))
            i++;
        flen = i - fstart;
        if (i < len || flen == 0)
            return fail(msg, cap, "%s (got %s)", DOLLARS_WHAT, q);
        if (flen > 6)
            return fail(msg, cap, "must have at most 6 decimal places (got %s)", q);
    }
    for (p = 0; p + 1 < ilen && s[p] == '0'; p++)
        ;
    /* 9223372036854 is the largest whole-dollar part that fits: 13 digits */
    if (ilen - p > 13)
        return dollars_too_big(msg, cap, q);
    for (; p < ilen; p++)
        ip = ip * 10 + (uint64_t)(s[p] - '0');
    for (i = 0; i < 6; i++)
        frac = frac * 10 + (i < flen ? (uint64_t)(s[fstart + i] - '0') : 0);
    if (ip > EP_MICRO_MAX / 1000000 || ip * 1000000 > EP_MICRO_MAX - frac)
        return dollars_too_big(msg, cap, q);
    *out = ip * 1000000 + frac;
    return 0;
}

int ep_dollars_from_lua(lua_State *L, int idx, uint64_t *out, char *msg, size_t cap)
{
    char d[QUOTE_MAX];

    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return parse_dollars_str(s, len, out, msg, cap);
    }
    case LUA_TNUMBER:
        describe_number(L, idx, d, sizeof d);
#if EPARTNER_HAVE_INTEGER
        if (lua_isinteger(L, idx)) {
            lua_Integer i = lua_tointeger(L, idx);
            if (i < 0)
                return fail(msg, cap, "%s (got %s)", DOLLARS_WHAT, d);
            if ((uint64_t)i > EP_MICRO_MAX / 1000000)
                return dollars_too_big(msg, cap, d);
            *out = (uint64_t)i * 1000000;
            return 0;
        }
        return fail(msg, cap, "%s (got %s, a float: pass dollar amounts as strings to avoid rounding)", DOLLARS_WHAT,
                    d);
#else
        {
            double n = (double)lua_tonumber(L, idx);
            if (!exact_integer_double(n, 0.0))
                return fail(msg, cap, "%s (got %s: pass dollar amounts as strings to avoid rounding)", DOLLARS_WHAT,
                            d);
            if ((uint64_t)n > EP_MICRO_MAX / 1000000)
                return dollars_too_big(msg, cap, d);
            *out = (uint64_t)n * 1000000;
            return 0;
        }
#endif
    default:
        ep_describe_type(L, idx, d, sizeof d);
        return fail(msg, cap, "%s (got %s)", DOLLARS_WHAT, d);
    }
}
