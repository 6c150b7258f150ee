#include "strbuf.h"

#include <stdint.h>
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

const char *strbuf_cstr(strbuf_t *sb)
{
    if (strbuf_grow(sb, 1) != STRBUF_OK)
        return NULL;
    sb->data[sb->len] = '\0';
    return sb->data;
}
