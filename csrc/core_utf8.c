#include "core.h"

/*
 * Counts characters and validates in one pass; *bad gets the 0-based offset
 * of the first byte that does not start a valid sequence.
 */
int ep_utf8_check(const unsigned char *s, size_t len, size_t *nchars, size_t *bad)
{
    size_t i = 0, n = 0;

    while (i < len) {
        size_t k;
        if (s[i] < 0x80) {
            i++;
            n++;
            continue;
        }
        k = ep_utf8_seq(s + i, len - i);
        if (k == 0) {
            if (bad)
                *bad = i;
            return -1;
        }
        i += k;
        n++;
    }
    if (nchars)
        *nchars = n;
    return 0;
}
