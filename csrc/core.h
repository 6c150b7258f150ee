/*
 * Private declarations shared by the core*.c files of endaoment.partner.core.
 * Nothing here is exported: the module's only public symbol is luaopen_*.
 */
#ifndef EPARTNER_CORE_H
#define EPARTNER_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "strbuf.h"

#define EP_VERSION "0.1.0"

/* Deep enough for any API payload; a cycle trips it long before the C stack is at risk. */
#define EP_MAX_DEPTH 64

/* Doubles represent every integer below 2^53 exactly; at or above it two integers share one double. */
#define EP_SAFE_INT_LIMIT 9007199254740992.0

/* Micro-dollar amounts must fit the API's signed 64-bit integers. */
#define EP_MICRO_MAX ((uint64_t)INT64_MAX)

/* Upvalues shared by every module function (see luaopen_endaoment_partner_core). */
#define EP_UV_KEEPBUF 1
#define EP_UV_ERROR 2
#define EP_UV_ARRAYMT 3
#define EP_NUPVALUES 3

#define EP_SHA256_LEN 32

/*
 * Used when the client sets no key_namespace (docs/derived-keys.md). Fixed for
 * good: a new value would change every derived key, and a re-run after an
 * upgrade would no longer be deduplicated against the run before it.
 */
#define EP_DEFAULT_KEY_NAMESPACE "6f0e2b43-5c1a-4d8e-9b7f-3a2d1c0e9f84"

/* Room for validator messages, including a quoted, truncated copy of the bad value. */
#define EP_MSG_MAX 256

EPARTNER_EXPORT int luaopen_endaoment_partner_core(lua_State *L);

/*
 * Length of the valid UTF-8 sequence starting at p (1-4), or 0 if the bytes
 * there are not one (overlong, surrogate, above U+10FFFF, truncated, stray
 * continuation byte). Bounds follow Unicode table 3-7.
 */
static inline size_t ep_utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    unsigned lo = 0x80, hi = 0xBF;
    size_t need, k;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0) {
        need = 2;
        lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        need = 2;
    else if (c == 0xED) {
        need = 2;
        hi = 0x9F;
    } else if (c == 0xF0) {
        need = 3;
        lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4) {
        need = 3;
        hi = 0x8F;
    } else
        return 0;
    if (avail <= need)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (k = 2; k <= need; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    return need + 1;
}

/* One step of a field path, kept as pointers so the hot path never formats. */
typedef struct ep_seg {
    const char *key; /* NULL for an array index; points into a Lua string on the stack */
    size_t klen;
    size_t index;    /* 1-based, as Lua users index */
} ep_seg;

/* State of one encode/prepare call. Errors are formatted into fixed arrays: no allocation on failure. */
typedef struct ep_ctx {
    lua_State *L;
    strbuf_t *sb;
    const char *root;  /* path of the top-level value itself ("body", "value") */
    const char *kind;  /* error kind once failed: "invalid" or "oom" */
    int depth;
    int nseg;
    ep_seg seg[EP_MAX_DEPTH + 2];
    char path[256];
    char msg[512];
} ep_ctx;

/* Incremental SHA-256 state; fixed size, so callers keep it on the stack. */
typedef struct ep_sha256 {
    uint32_t h[8];
    uint64_t total; /* bytes so far, for the length field of the padding */
    unsigned char buf[64];
    size_t nbuf;
} ep_sha256;

#pragma GCC visibility push(hidden)

/* core_utf8.c */
int ep_utf8_check(const unsigned char *s, size_t len, size_t *nchars, size_t *bad);

/* core_validate.c: 0 when valid, else -1 with a "must ..." sentence in msg (no field path). */
int ep_is_uuid(const char *s, size_t len);
void ep_trim(const char **s, size_t *len);
int ep_check_partner_id(const char *s, size_t len, const char **out, size_t *outlen, char *msg, size_t cap);
int ep_check_timestamp(const char *s, size_t len, char *msg, size_t cap);
int ep_check_email(const char *s, size_t len, char *msg, size_t cap);
int ep_check_ein(const char *s, size_t len, char *msg, size_t cap);
int ep_check_ticker(const char *s, size_t len, char *msg, size_t cap);
int ep_check_country(const char *s, size_t len, char *msg, size_t cap);
int ep_check_header_value(const char *s, size_t len, char *msg, size_t cap);
int ep_check_header_name(const char *s, size_t len, char *msg, size_t cap);
int ep_micro_from_lua(lua_State *L, int idx, int allow_zero, uint64_t *out, char *msg, size_t cap);
int ep_dollars_from_lua(lua_State *L, int idx, uint64_t *out, char *msg, size_t cap);
size_t ep_u64_to_str(uint64_t v, char out[21]);
void ep_quote(const char *s, size_t len, char *out, size_t cap);
void ep_describe_type(lua_State *L, int idx, char *out, size_t cap);
void ep_describe_value(lua_State *L, int idx, char *out, size_t cap);

/* core_sha256.c */
void ep_sha256_init(ep_sha256 *c);
void ep_sha256_update(ep_sha256 *c, const void *data, size_t len);
void ep_sha256_final(ep_sha256 *c, unsigned char out[EP_SHA256_LEN]);
void ep_hex_lower(const unsigned char *in, size_t n, char *out);
void ep_derive_key(const char ns[36], const char *op, size_t oplen, const char *nat, size_t natlen, char out[37]);
int ep_l_sha256_hex(lua_State *L);
int ep_l_derive_key(lua_State *L);
int ep_l_derive_natural(lua_State *L);
const char *ep_sha256_impl(void);
/* core_decode.c */
int ep_l_decode(lua_State *L);

/* core.c */
void ep_uuid4(char out[37]);
strbuf_t *ep_buffer_acquire(lua_State *L);
void ep_buffer_release(lua_State *L, strbuf_t *sb);
void ep_push_error(lua_State *L, const char *kind, const char *msg, const char *field);

/* core_json.c */
void ep_ctx_init(ep_ctx *c, lua_State *L, strbuf_t *sb, const char *root);
int ep_fail(ep_ctx *c, const char *fmt, ...) STRBUF_PRINTF(2, 3);
int ep_oom(ep_ctx *c);
void ep_push_ctx_error(ep_ctx *c);
int ep_is_null(lua_State *L, int idx);
int ep_has_array_mt(lua_State *L, int idx);
int ep_put_string(ep_ctx *c, const char *s, size_t len, size_t *nchars);
int ep_put_u64(ep_ctx *c, uint64_t v, int quoted);
int ep_put_number(ep_ctx *c, int idx);
int ep_encode_value(ep_ctx *c, int idx);
int ep_l_encode(lua_State *L);

/* core_prepare.c */
int ep_l_prepare(lua_State *L);
int ep_l_validate(lua_State *L);

#pragma GCC visibility pop

static inline void ep_seg_key(ep_ctx *c, const char *key, size_t klen)
{
    ep_seg *s = &c->seg[c->nseg++];
    s->key = key;
    s->klen = klen;
    s->index = 0;
}

static inline void ep_seg_index(ep_ctx *c, size_t index)
{
    ep_seg *s = &c->seg[c->nseg++];
    s->key = NULL;
    s->klen = 0;
    s->index = index;
}

#endif
