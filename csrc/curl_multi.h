/*
 * Many transfers at once on one libcurl multi handle, with no Lua in it
 * (the Lua methods are csrc/curl_lua_multi.c). Everything runs on libcurl's
 * socket interface (CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION with
 * curl_multi_socket_action):
 *
 *   - libcurl's socket and timer callbacks only record, in C, which sockets
 *     it wants watched and for what, and when its timer is due; nothing is
 *     called back from them;
 *   - ecurl_multi_drive() is a small poll(2) loop over those sockets (no
 *     FD_SETSIZE limit): the blocking wait and the non-blocking perform of
 *     the Lua API;
 *   - a host with its own event loop reads the recorded changes
 *     (ecurl_multi_changes) and the timer (ecurl_multi_timer_ms), and calls
 *     ecurl_multi_action() when a socket is ready or the timer is due.
 *
 * At most max_conn transfers are inside the multi handle at once; more wait
 * in a queue here, so that CURLOPT_TIMEOUT_MS counts from the moment a
 * transfer really starts (in libcurl's own queue the wait would count
 * against it). CURLMOPT_MAX_TOTAL_CONNECTIONS and CURLMOPT_MAXCONNECTS are
 * set to the same number: connections are kept alive and reused, and HTTP/2
 * streams share one connection (CURLOPT_PIPEWAIT).
 *
 * Ownership: the ecurl_multi owns every item in its lists, the easy
 * handles, the config (share handle) and the multi handle; an item taken
 * with ecurl_multi_take_done() belongs to the caller until
 * ecurl_multi_item_free(). ecurl_multi_close() is idempotent.
 */
#ifndef EPARTNER_CURL_MULTI_H
#define EPARTNER_CURL_MULTI_H

#include <stddef.h>
#include <stdint.h>

#include "curl_transfer.h"

#define ECURL_MULTI_DEFAULT_CONNECTIONS 16
#define ECURL_MULTI_MAX_CONNECTIONS 512

typedef struct ecurl_mitem {
    ecurl_transfer tr; /* first member: CURLOPT_PRIVATE points at it, and so at the item */
    struct ecurl_mitem *prev;
    struct ecurl_mitem *next;
    int64_t id;
    long timeout_ms;
    long connect_timeout_ms;
    int in_multi; /* added to the multi handle and not removed yet */
    int failed;   /* err holds a failure found before libcurl ran */
    ecurl_error err;
} ecurl_mitem;

typedef struct {
    ecurl_mitem *head;
    ecurl_mitem *tail;
    size_t n;
} ecurl_mlist;

/* What a host learns about one socket: watch it for want, or stop (ECURL_WANT_REMOVE). */
enum { ECURL_WANT_REMOVE = 0, ECURL_WANT_READ = 1, ECURL_WANT_WRITE = 2, ECURL_WANT_BOTH = 3 };

typedef struct {
    int fd;
    int want; /* ECURL_WANT_* */
} ecurl_sockchange;

typedef struct {
    CURLM *multi;
    ecurl_config cfg; /* owned: see ecurl_config_init */
    long max_conn;
    ecurl_mlist queued;  /* begun, waiting for a free slot */
    ecurl_mlist running; /* inside the multi handle */
    ecurl_mlist done;    /* finished, waiting for ecurl_multi_take_done() */
    int64_t next_id;
    int closed;
    /* What libcurl's socket callback recorded, per descriptor (state bits). */
    unsigned char *socks;
    size_t nsocks;   /* entries allocated */
    size_t hisock;   /* one past the highest descriptor ever recorded */
    int *dirty;      /* descriptors changed since the last ecurl_multi_changes() */
    size_t ndirty;
    size_t capdirty;
    void *pfds; /* struct pollfd[] scratch for ecurl_multi_drive */
    size_t cappfds;
    int callback_oom; /* a callback could not record: the multi functions report it */
    /* What libcurl's timer callback recorded. */
    int timer_set;
    double timer_at_ms; /* monotonic */
} ecurl_multi;

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/*
 * Sets m up for max_conn transfers at once; m->cfg must be initialised
 * already. Returns 0, or -1 with err set (then ecurl_multi_close(m)).
 */
int ecurl_multi_open(ecurl_multi *m, long max_conn, ecurl_error *err);
/* Frees everything m owns; idempotent. */
void ecurl_multi_close(ecurl_multi *m);

/* A new, initialised item (NULL when out of memory). */
ecurl_mitem *ecurl_multi_item_new(void);
/* Frees an item that is in no list (never submitted, or taken). */
void ecurl_multi_item_free(ecurl_multi *m, ecurl_mitem *it);
/* Queues a begun item and starts what has a free slot; returns its id (m owns it now). */
int64_t ecurl_multi_submit(ecurl_multi *m, ecurl_mitem *it, long timeout_ms, long connect_timeout_ms);
/* Removes id wherever it is (queued, running, done-not-taken) and frees it; 1 if found. */
int ecurl_multi_cancel(ecurl_multi *m, int64_t id);
/* Unlinks the oldest finished item; the caller frees it. NULL when none. */
ecurl_mitem *ecurl_multi_take_done(ecurl_multi *m);

/*
 * Waits up to wait_ms (0: not at all; never past libcurl's timer) for a
 * socket libcurl watches, then lets libcurl act on every ready socket and on
 * its timer, collects finished transfers and starts queued ones. Returns
 * CURLM_OK or the first error; *nready gets how many sockets were ready.
 */
CURLMcode ecurl_multi_drive(ecurl_multi *m, int wait_ms, int *nready);
/*
 * For a host's event loop: socket fd is ready for ev_bitmask
 * (CURL_CSELECT_IN | CURL_CSELECT_OUT | CURL_CSELECT_ERR), or, with fd
 * CURL_SOCKET_TIMEOUT, the timer is due. Then collects and starts as drive does.
 */
CURLMcode ecurl_multi_action(ecurl_multi *m, curl_socket_t fd, int ev_bitmask);
/* Milliseconds until libcurl's timer is due (0: now), or -1 when none is set. */
long ecurl_multi_timer_ms(const ecurl_multi *m);

/* An upper bound of how many changes ecurl_multi_changes() can return now. */
size_t ecurl_multi_changes_bound(const ecurl_multi *m);
/*
 * What changed since the last call, in order, at most cap entries (give it
 * ecurl_multi_changes_bound()): per descriptor a REMOVE when the host's
 * watch is stale (the socket closed, or libcurl stopped caring), then the
 * current want if the host must (re)start watching. Consumed: the next call
 * reports only newer changes.
 */
size_t ecurl_multi_changes(ecurl_multi *m, ecurl_sockchange *out, size_t cap);
/* How many descriptors libcurl wants watched now. */
size_t ecurl_multi_watched_count(const ecurl_multi *m);
/* The descriptors libcurl wants watched now, ascending, at most cap. Nothing is consumed. */
size_t ecurl_multi_watched(const ecurl_multi *m, ecurl_sockchange *out, size_t cap);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
