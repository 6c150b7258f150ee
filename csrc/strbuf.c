#include "strbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define STRBUF_MIN_CAP 256

void strbuf_init(strbuf_t *sb)
{
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->limit = 0;
}

int strbuf_grow(strbuf_t *sb, size_t extra)
{
    size_t need, cap;
    char *p;

    if (sb->cap - sb->len >= extra)
        return STRBUF_OK;
    if (extra > SIZE_MAX - sb->len)
        return STRBUF_ENOMEM;
    need = sb->len + extra;
    if (sb->limit && need > sb->limit)
        return STRBUF_ELIMIT;

    /* Doubling keeps appends amortised O(1); the limit caps the last step. */
    cap = sb->cap < STRBUF_MIN_CAP ? STRBUF_MIN_CAP : sb->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (sb->limit && cap > sb->limit)
        cap = sb->limit;

    p = realloc(sb->data, cap);
    if (!p)
        return STRBUF_ENOMEM;
    sb->data = p;
    sb->cap = cap;
    return STRBUF_OK;
}

void strbuf_free(strbuf_t *sb)
{
    free(sb->data);
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
}

int strbuf_appendf(strbuf_t *sb, const char *fmt, ...)
{
    va_list ap;
    int n;
    size_t room;

    room = sb->cap - sb->len;
    va_start(ap, fmt);
    n = vsnprintf(room ? sb->data + sb->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return STRBUF_ENOMEM;
    if ((size_t)n < room) {
        sb->len += (size_t)n;
        return STRBUF_OK;
    }
    /* vsnprintf needs room for its NUL even though we do not keep it. */
    if ((size_t)n == SIZE_MAX)
        return STRBUF_ENOMEM;
    {
        int rc = strbuf_grow(sb, (size_t)n + 1);
        if (rc != STRBUF_OK)
            return rc;
    }
    va_start(ap, fmt);
    n = vsnprintf(sb->data + sb->len, sb->cap - sb->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return STRBUF_ENOMEM;
    sb->len += (size_t)n;
    return STRBUF_OK;
}

const char *strbuf_cstr(strbuf_t *sb)
{
    if (strbuf_grow(sb, 1) != STRBUF_OK)
        return NULL;
    sb->data[sb->len] = '\0';
    return sb->data;
}

char *strbuf_detach(strbuf_t *sb, size_t *len)
{
    char *p;

    if (strbuf_cstr(sb) == NULL)
        return NULL;
    p = sb->data;
    if (len)
        *len = sb->len;
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    return p;
}
