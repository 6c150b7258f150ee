/*
 * SHA-256 (FIPS 180-4) and the derived idempotency keys built on it
 * (docs/derived-keys.md). Written here rather than linked from OpenSSL so the
 * core module keeps its single libuuid dependency and stays loadable inside
 * nginx workers whatever TLS library they carry.
 */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest natural id: ledger ids are short, and a bound keeps a stray blob from being hashed into a key. */
#define EP_KEY_NATURAL_MAX 1024

static const uint32_t K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

/* n is always 1..31 here, so the shift by 32 - n is defined. */
#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

/* Bytes are assembled explicitly: the input may be unaligned and the host may be either endianness. */
static uint32_t load_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void store_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/*
 * One round, with the eight working variables renamed instead of shifted:
 * eight rounds bring the names back to where they started. This saves the
 * seven moves per round of the textbook loop (about a third of a block).
 */
#define S0(x) (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define S1(x) (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
#define CH(x, y, z) (((x) & (y)) ^ (~(x) & (z)))
#define MAJ(x, y, z) (((x) & (y)) ^ ((x) & (z)) ^ ((y) & (z)))
#define ROUND(a, b, c, d, e, f, g, hh, i)                          \
    do {                                                           \
        uint32_t t1 = (hh) + S1(e) + CH(e, f, g) + K[i] + w[i];    \
        uint32_t t2 = S0(a) + MAJ(a, b, c);                        \
        (d) += t1;                                                 \
        (hh) = t1 + t2;                                            \
    } while (0)

static void compress_portable(uint32_t h[8], const unsigned char *block)
{
    uint32_t w[64];
    uint32_t a, b, c, d, e, f, g, hh;
    int t;

    for (t = 0; t < 16; t++)
        w[t] = load_be32(block + 4 * t);
    for (t = 16; t < 64; t++) {
        uint32_t s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    a = h[0];
    b = h[1];
    c = h[2];
    d = h[3];
    e = h[4];
    f = h[5];
    g = h[6];
    hh = h[7];
    for (t = 0; t < 64; t += 8) {
        ROUND(a, b, c, d, e, f, g, hh, t);
        ROUND(hh, a, b, c, d, e, f, g, t + 1);
        ROUND(g, hh, a, b, c, d, e, f, t + 2);
        ROUND(f, g, hh, a, b, c, d, e, t + 3);
        ROUND(e, f, g, hh, a, b, c, d, t + 4);
        ROUND(d, e, f, g, hh, a, b, c, t + 5);
        ROUND(c, d, e, f, g, hh, a, b, t + 6);
        ROUND(b, c, d, e, f, g, hh, a, t + 7);
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EP_HAVE_SHANI 1
#include <cpuid.h>
#include <immintrin.h>

/*
 * The same block function on the x86 SHA extensions (Intel SHA-NI, every
 * AMD Zen): a derived key is two blocks, and in C they were two thirds of
 * its cost. The state is kept as the instructions want it, ABEF and CDGH,
 * and the message schedule as four vectors of four words, refilled in place
 * once consumed (msg1 adds sigma0 and W[i-16], alignr brings W[i-7], msg2
 * adds sigma1).
 */
__attribute__((target("sha,sse4.1,ssse3"))) static void compress_shani(uint32_t h[8],
                                                                        const unsigned char *block)
{
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i m[4], abef, cdgh, abef0, cdgh0, t0, t1;
    int t;

    t0 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)&h[0]), 0xB1); /* B A D C */
    t1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)&h[4]), 0x1B); /* H G F E */
    abef = _mm_alignr_epi8(t0, t1, 8);
    cdgh = _mm_blend_epi16(t1, t0, 0xF0);
    abef0 = abef;
    cdgh0 = cdgh;
    for (t = 0; t < 4; t++)
        m[t] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(block + 16 * t)), swap);
    for (t = 0; t < 16; t++) {
        __m128i msg = _mm_add_epi32(m[t & 3], _mm_loadu_si128((const __m128i *)(const void *)&K[4 * t]));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, msg);
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(msg, 0x0E));
        if (t < 12) {
            __m128i w = _mm_sha256msg1_epu32(m[t & 3], m[(t + 1) & 3]);
            w = _mm_add_epi32(w, _mm_alignr_epi8(m[(t + 3) & 3], m[(t + 2) & 3], 4));
            m[t & 3] = _mm_sha256msg2_epu32(w, m[(t + 3) & 3]);
        }
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
    t0 = _mm_shuffle_epi32(abef, 0x1B); /* A B E F */
    t1 = _mm_shuffle_epi32(cdgh, 0xB1); /* G H C D */
    _mm_storeu_si128((__m128i *)(void *)&h[0], _mm_blend_epi16(t0, t1, 0xF0));
    _mm_storeu_si128((__m128i *)(void *)&h[4], _mm_alignr_epi8(t1, t0, 8));
}
#endif

static void (*compress)(uint32_t h[8], const unsigned char *block) = compress_portable;
static const char *impl_name = "portable";

#if EP_HAVE_SHANI
/*
 * Chosen once, when the module is loaded (the dynamic loader runs this under
 * its lock, so no two threads race on it). EPARTNER_SHA256=portable keeps
 * the C version: the specs compare the two.
 */
__attribute__((constructor)) static void choose_compress(void)
{
    unsigned a, b, c, d;
    const char *force = getenv("EPARTNER_SHA256");

    if (force && strcmp(force, "portable") == 0)
        return;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return;
    if (__get_cpuid_max(0, NULL) < 7)
        return;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & bit_SHA))
        return;
    compress = compress_shani;
    impl_name = "sha-ni";
}
#endif

/* Which block function this process uses: "sha-ni" or "portable". */
const char *ep_sha256_impl(void)
{
    return impl_name;
}

void ep_sha256_init(ep_sha256 *c)
{
    static const uint32_t iv[8] = {
        0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
    };

    memcpy(c->h, iv, sizeof iv);
    c->total = 0;
    c->nbuf = 0;
}

void ep_sha256_update(ep_sha256 *c, const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;

    /* The length field is 64 bits of *bits*; messages of 2^61 bytes cannot exist in a Lua string here. */
    c->total += (uint64_t)len;
    if (c->nbuf) {
        size_t take = 64 - c->nbuf;
        if (take > len)
            take = len;
        memcpy(c->buf + c->nbuf, p, take);
        c->nbuf += take;
        p += take;
        len -= take;
        if (c->nbuf < 64)
            return;
        compress(c->h, c->buf);
        c->nbuf = 0;
    }
    /* Whole blocks straight from the caller's bytes: no copy for the bulk of a long message. */
    while (len >= 64) {
        compress(c->h, p);
        p += 64;
        len -= 64;
    }
    if (len) {
        memcpy(c->buf, p, len);
        c->nbuf = len;
    }
}

void ep_sha256_final(ep_sha256 *c, unsigned char out[EP_SHA256_LEN])
{
    uint64_t bits = c->total * 8;
    int i;

    c->buf[c->nbuf++] = 0x80;
    /* Fewer than 8 bytes left for the length: pad out this block and put the length in one more. */
    if (c->nbuf > 56) {
        memset(c->buf + c->nbuf, 0, 64 - c->nbuf);
        compress(c->h, c->buf);
        c->nbuf = 0;
    }
    memset(c->buf + c->nbuf, 0, 56 - c->nbuf);
    store_be32(c->buf + 56, (uint32_t)(bits >> 32));
    store_be32(c->buf + 60, (uint32_t)bits);
    compress(c->h, c->buf);
    for (i = 0; i < 8; i++)
        store_be32(out + 4 * i, c->h[i]);
    /* The state held a hash of caller data; do not leave it in a reused stack frame. */
    memset(c, 0, sizeof *c);
}

void ep_hex_lower(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
}

static int is_key_op(const char *s, size_t len)
{
    size_t i;

    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

void ep_derive_key(const char ns[36], const char *op, size_t oplen, const char *nat, size_t natlen, char out[37])
{
    ep_sha256 c;
    unsigned char h[EP_SHA256_LEN];
    char lower[36];
    char hex[32];
    size_t i;

    /* Case folded so "ABC..." and "abc..." name the same namespace, as UUIDs compare case-insensitively. */
    for (i = 0; i < 36; i++) {
        char ch = ns[i];
        lower[i] = (ch >= 'A' && ch <= 'F') ? (char)(ch - 'A' + 'a') : ch;
    }
    /* Streamed piecewise so the key needs no concatenation buffer; the bytes hashed are the same. */
    ep_sha256_init(&c);
    ep_sha256_update(&c, lower, 36);
    ep_sha256_update(&c, ":", 1);
    ep_sha256_update(&c, op, oplen);
    ep_sha256_update(&c, ":", 1);
    ep_sha256_update(&c, nat, natlen);
    ep_sha256_final(&c, h);

    /* Stamped as RFC 4122 version 4 so the API's UUID validator accepts it like any random key. */
    h[6] = (unsigned char)((h[6] & 0x0f) | 0x40);
    h[8] = (unsigned char)((h[8] & 0x3f) | 0x80);
    ep_hex_lower(h, 16, hex);
    memcpy(out, hex, 8);
    out[8] = '-';
    memcpy(out + 9, hex + 8, 4);
    out[13] = '-';
    memcpy(out + 14, hex + 12, 4);
    out[18] = '-';
    memcpy(out + 19, hex + 16, 4);
    out[23] = '-';
    memcpy(out + 24, hex + 20, 12);
    out[36] = '\0';
}

/*
 * Strictly strings: a number would be hashed as its Lua text, and 5.1 and 5.4
 * print 1.0 differently, so the same call would give different keys.
 */
static const char *string_arg(lua_State *L, int idx, size_t *len, const char *what)
{
    if (lua_type(L, idx) != LUA_TSTRING) {
        char d[32], msg[96];
        ep_describe_type(L, idx, d, sizeof d);
        snprintf(msg, sizeof msg, "%s must be a string (got %s)", what, d);
        luaL_argerror(L, idx, msg);
        return NULL;
    }
    return lua_tolstring(L, idx, len);
}

int ep_l_sha256_hex(lua_State *L)
{
    ep_sha256 c;
    unsigned char h[EP_SHA256_LEN];
    char hex[2 * EP_SHA256_LEN];
    size_t len;
    const char *s = string_arg(L, 1, &len, "input");

    ep_sha256_init(&c);
    ep_sha256_update(&c, s, len);
    ep_sha256_final(&c, h);
    ep_hex_lower(h, sizeof h, hex);
    lua_pushlstring(L, hex, sizeof hex);
    return 1;
}

/* Argument errors raise: the Lua layer validates partner data first, so a bad value here is a bug. */
int ep_l_derive_key(lua_State *L)
{
    size_t nslen, oplen, natlen;
    const char *ns = string_arg(L, 1, &nslen, "namespace");
    const char *op = string_arg(L, 2, &oplen, "op");
    const char *nat = string_arg(L, 3, &natlen, "natural_id");
    char key[37];

    if (!ep_is_uuid(ns, nslen))
        return luaL_argerror(L, 1, "namespace must be a UUID string (8-4-4-4-12 hex)");
    if (!is_key_op(op, oplen))
        return luaL_argerror(L, 2, "op must be a non-empty string of a-z, 0-9 and _");
    if (natlen == 0)
        return luaL_argerror(L, 3, "natural_id must not be empty");
    if (natlen > EP_KEY_NATURAL_MAX) {
        char msg[64];
        snprintf(msg, sizeof msg, "natural_id must be at most %d bytes", EP_KEY_NATURAL_MAX);
        return luaL_argerror(L, 3, msg);
    }
    /* A NUL would be silently cut by the C strings of other implementations of the recipe. */
    if (memchr(nat, '\0', natlen))
        return luaL_argerror(L, 3, "natural_id must not contain a NUL byte");
    ep_derive_key(ns, op, oplen, nat, natlen, key);
    lua_pushlstring(L, key, 36);
    return 1;
}

/*
 * core.derive_natural(namespace, op, body, k1 [, k2]): the key derived from
 * the natural id at body[k1][k2] (rawget, so no metamethod runs), and that
 * id; nothing when it is absent or not usable (not a string, empty, longer
 * than 1024 bytes, a NUL). The planner's one call for its derived key: the
 * same rules as partner._natural_id and derive_key, without a Lua walk.
 */
int ep_l_derive_natural(lua_State *L)
{
    size_t nslen, oplen, natlen;
    const char *ns = string_arg(L, 1, &nslen, "namespace");
    const char *op = string_arg(L, 2, &oplen, "op");
    const char *nat;
    int top = lua_gettop(L), i;
    char key[37];

    if (!ep_is_uuid(ns, nslen))
        return luaL_argerror(L, 1, "namespace must be a UUID string (8-4-4-4-12 hex)");
    if (!is_key_op(op, oplen))
        return luaL_argerror(L, 2, "op must be a non-empty string of a-z, 0-9 and _");
    /* A path of one name is called with a nil second (spec.natural[2]). */
    while (top > 4 && lua_isnil(L, top))
        top--;
    if (top < 4)
        return luaL_argerror(L, 4, "a field name is required");
    lua_pushvalue(L, 3);
    for (i = 4; i <= top; i++) {
        if (lua_type(L, i) != LUA_TSTRING)
            return luaL_argerror(L, i, "field names must be strings");
        if (!lua_istable(L, -1))
            return 0;
        lua_pushvalue(L, i);
        lua_rawget(L, -2);
        lua_remove(L, -2);
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        return 0;
    nat = lua_tolstring(L, -1, &natlen);
    if (natlen == 0 || natlen > EP_KEY_NATURAL_MAX || memchr(nat, '\0', natlen))
        return 0;
    ep_derive_key(ns, op, oplen, nat, natlen, key);
    lua_pushlstring(L, key, 36);
    lua_insert(L, -2);
    return 2;
}
