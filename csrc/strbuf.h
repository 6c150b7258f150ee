/*
 * Growable byte buffer shared by the core and curl modules.
 *
 * Unlike lua-cjson's strbuf, running out of memory never aborts: every
 * growing call returns STRBUF_ENOMEM and leaves the buffer as it was, so the
 * caller can free what it owns and report the failure (an nginx worker must
 * not die because one request was large).
 */
#ifndef EPARTNER_STRBUF_H
#define EPARTNER_STRBUF_H

#include <stddef.h>
#include <string.h>

/*
 * Link-time names carry a prefix: a host that statically links lua-cjson
 * (OpenResty does) has its own strbuf_* symbols.
 */
#define strbuf_init    epartner_strbuf_init
#define strbuf_grow    epartner_strbuf_grow
#define strbuf_free    epartner_strbuf_free
#define strbuf_cstr    epartner_strbuf_cstr

typedef struct strbuf {
    char *data;   /* NULL until the first append */
    size_t len;   /* bytes in use */
    size_t cap;   /* bytes allocated */
    size_t limit; /* refuse to grow past this many bytes; 0 = no limit */
} strbuf_t;

enum {
    STRBUF_OK = 0,
    STRBUF_ENOMEM = -1, /* allocation failed, or size arithmetic overflowed */
    STRBUF_ELIMIT = -2  /* would exceed sb->limit */
};

/* printf-format checking for the core's message builders (core.h). */
#if defined(__GNUC__)
#define STRBUF_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define STRBUF_PRINTF(f, a)
#endif

#pragma GCC visibility push(hidden)
void strbuf_init(strbuf_t *sb);
/* Make room for at least `extra` more bytes; the contents are kept. */
int strbuf_grow(strbuf_t *sb, size_t extra);
/* Release the memory; the buffer is empty and reusable afterwards. */
void strbuf_free(strbuf_t *sb);
/* NUL-terminated view of the contents (the NUL is not counted in len); NULL on failure. */
const char *strbuf_cstr(strbuf_t *sb);
#pragma GCC visibility pop

static inline int strbuf_reserve(strbuf_t *sb, size_t extra)
{
    return (sb->cap - sb->len >= extra) ? STRBUF_OK : strbuf_grow(sb, extra);
}

static inline int strbuf_append(strbuf_t *sb, const void *p, size_t n)
{
    int rc = strbuf_reserve(sb, n);
    if (rc != STRBUF_OK)
        return rc;
    if (n) {
        memcpy(sb->data + sb->len, p, n);
        sb->len += n;
    }
    return STRBUF_OK;
}

static inline int strbuf_putc(strbuf_t *sb, char c)
{
    if (sb->len == sb->cap) {
        int rc = strbuf_grow(sb, 1);
        if (rc != STRBUF_OK)
            return rc;
    }
    sb->data[sb->len++] = c;
    return STRBUF_OK;
}

/* The *_unchecked forms are for hot loops that reserved the space beforehand. */
static inline void strbuf_putc_unchecked(strbuf_t *sb, char c)
{
    sb->data[sb->len++] = c;
}

static inline void strbuf_append_unchecked(strbuf_t *sb, const void *p, size_t n)
{
    memcpy(sb->data + sb->len, p, n);
    sb->len += n;
}

static inline void strbuf_reset(strbuf_t *sb)
{
    sb->len = 0;
}

#endif
