/*
 * The multi engine of endaoment.partner.curl (see curl_multi.h): transfers
 * queued, running and done, driven through libcurl's socket interface.
 * No Lua here: libcurl's callbacks record sockets and the timer in C, and
 * the Lua methods (curl_lua_multi.c) read what was recorded afterwards.
 */
#include "curl_multi.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Rounds of timer + refill in one drive or action: a slot freed by a finished transfer is reused at once. */
#define DRIVE_ROUNDS 4

/* Per-descriptor state bits in m->socks. */
#define S_WANT 0x03u      /* what libcurl wants now: ECURL_WANT_* (0: nothing) */
#define S_DW_SHIFT 2      /* what the host was last told to watch for */
#define S_DW 0x0cu
#define S_DELIVERED 0x10u /* the host has a watch on this descriptor */
#define S_STALE 0x20u     /* libcurl removed the socket since: the host's watch is stale */
#define S_DIRTY 0x40u     /* listed in m->dirty */

static double now_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------------ */
/* lists                                                                    */

static void list_push(ecurl_mlist *l, ecurl_mitem *it)
{
    it->next = NULL;
    it->prev = l->tail;
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    l->n++;
}

static void list_unlink(ecurl_mlist *l, ecurl_mitem *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else
        l->head = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        l->tail = it->prev;
    it->prev = it->next = NULL;
    l->n--;
}

static ecurl_mitem *list_find(const ecurl_mlist *l, int64_t id)
{
    ecurl_mitem *it;
    for (it = l->head; it; it = it->next) {
        if (it->id == id)
            return it;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* libcurl's callbacks: they record, nothing more                           */

/* Room for descriptor fd in m->socks and for one more dirty entry. */
static int reserve_socket(ecurl_multi *m, size_t fd)
{
    if (fd >= m->nsocks) {
        size_t n = m->nsocks ? m->nsocks : 64;
        unsigned char *p;
        while (n <= fd) {
            if (n > ((size_t)-1) / 2)
                return -1;
            n *= 2;
        }
        p = (unsigned char *)realloc(m->socks, n);
        if (!p)
            return -1;
        memset(p + m->nsocks, 0, n - m->nsocks);
        m->socks = p;
        m->nsocks = n;
    }
    if (m->ndirty == m->capdirty) {
        size_t n = m->capdirty ? m->capdirty * 2 : 32;
        int *p;
        if (n > ((size_t)-1) / sizeof *p)
            return -1;
        p = (int *)realloc(m->dirty, n * sizeof *p);
        if (!p)
            return -1;
        m->dirty = p;
        m->capdirty = n;
    }
    return 0;
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    ecurl_multi *m = (ecurl_multi *)userp;
    unsigned int st, want;

    (void)easy;
    (void)socketp;
    if (s == CURL_SOCKET_BAD || s < 0)
        return 0;
    if (reserve_socket(m, (size_t)s) != 0) {
        /* libcurl then stops every transfer (CURLM_ABORTED_BY_CALLBACK): reported as out of memory. */
        m->callback_oom = 1;
        return -1;
    }
    switch (what) {
    case CURL_POLL_IN: want = ECURL_WANT_READ; break;
    case CURL_POLL_OUT: want = ECURL_WANT_WRITE; break;
    case CURL_POLL_INOUT: want = ECURL_WANT_BOTH; break;
    default: want = 0; break; /* CURL_POLL_NONE, CURL_POLL_REMOVE */
    }
    st = m->socks[s];
    if (what == CURL_POLL_REMOVE && (st & S_DELIVERED))
        st |= S_STALE; /* the socket is (about to be) closed: a new one may get its number */
    st = (st & ~S_WANT) | want;
    if (!(st & S_DIRTY)) {
        st |= S_DIRTY;
        m->dirty[m->ndirty++] = (int)s;
    }
    m->socks[s] = (unsigned char)st;
    if ((size_t)s >= m->hisock)
        m->hisock = (size_t)s + 1;
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    ecurl_multi *m = (ecurl_multi *)userp;

    (void)multi;
    if (timeout_ms < 0) {
        m->timer_set = 0;
    } else {
        m->timer_set = 1;
        m->timer_at_ms = now_ms() + (double)timeout_ms;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* items and easy handles                                                   */

ecurl_mitem *ecurl_multi_item_new(void)
{
    ecurl_mitem *it = (ecurl_mitem *)calloc(1, sizeof *it);
    if (it)
        ecurl_transfer_init(&it->tr);
    return it;
}

/* Takes the item's easy handle out of the multi handle and frees it (its buffers stay in the item). */
static void retire_easy(ecurl_multi *m, ecurl_mitem *it)
{
    CURL *easy = it->tr.easy;
    if (it->in_multi && easy && m->multi)
        curl_multi_remove_handle(m->multi, easy);
    it->in_multi = 0;
    if (!easy)
        return;
    it->tr.easy = NULL;
    /*
     * Never reused: libcurl before 8.1.0 (Debian 12 ships 7.88) frees a
     * transfer's headers but keeps pointing at them in the easy handle, and a
     * next answer whose first header line is folded then writes to freed
     * memory (curl issue 11101; fuzz/regressions/curl). Connections, DNS and
     * the CA store live in the multi handle, so a new easy handle costs
     * only its allocation.
     */
    curl_easy_cleanup(easy);
}

void ecurl_multi_item_free(ecurl_multi *m, ecurl_mitem *it)
{
    if (!it)
        return;
    retire_easy(m, it);
    ecurl_transfer_release(&it->tr);
    free(it);
}

static void fail_item(ecurl_multi *m, ecurl_mitem *it)
{
    it->failed = 1;
    retire_easy(m, it);
    list_push(&m->done, it);
}

/* Moves queued transfers into the multi handle while there is a free slot; returns how many. */
static int start_queued(ecurl_multi *m)
{
    int started = 0;

    while (!m->closed && m->queued.head && (long)m->running.n < m->max_conn) {
        ecurl_mitem *it = m->queued.head;
        ecurl_request req;
        CURLMcode mc;
        CURL *easy;

        list_unlink(&m->queued, it);
        easy = curl_easy_init();
        if (!easy) {
            ecurl_error_set(&it->err, ECURL_KIND_OOM, -1, "cannot create a libcurl easy handle");
            fail_item(m, it);
            continue;
        }
        /* What begin() did not keep in the transfer: the timeouts. */
        memset(&req, 0, sizeof req);
        req.timeout_ms = it->timeout_ms;
        req.connect_timeout_ms = it->connect_timeout_ms;
        if (ecurl_transfer_setup(&it->tr, easy, &m->cfg, &req, &it->err) != 0) {
            /* setup may fail before it takes the handle: make it ours to retire either way */
            it->tr.easy = easy;
            fail_item(m, it);
            continue;
        }
        mc = curl_multi_add_handle(m->multi, easy);
        if (mc != CURLM_OK) {
            ecurl_error_set(&it->err, mc == CURLM_OUT_OF_MEMORY ? ECURL_KIND_OOM : ECURL_KIND_CONFIG, -1,
                            "cannot start the transfer: %s", curl_multi_strerror(mc));
            fail_item(m, it);
            continue;
        }
        it->in_multi = 1;
        list_push(&m->running, it);
        started++;
    }
    return started;
}

/* Moves every transfer libcurl reports finished from running to done. */
static void collect(ecurl_multi *m)
{
    CURLMsg *msg;
    int left;

    while (!m->closed && (msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        /* msg does not survive curl_multi_remove_handle: copy what we need first */
        CURL *easy = msg->easy_handle;
        CURLcode code = msg->data.result;
        char *priv = NULL;
        ecurl_mitem *it;

        if (msg->msg != CURLMSG_DONE)
            continue;
        if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) != CURLE_OK || priv == NULL)
            continue; /* not one of ours: cannot happen */
        it = (ecurl_mitem *)(void *)priv;
        ecurl_transfer_complete(&it->tr, code);
        retire_easy(m, it);
        list_unlink(&m->running, it);
        list_push(&m->done, it);
    }
}

static void free_list(ecurl_multi *m, ecurl_mlist *l)
{
    while (l->head) {
        ecurl_mitem *it = l->head;
        list_unlink(l, it);
        ecurl_multi_item_free(m, it);
    }
}

/* ------------------------------------------------------------------------ */
/* life cycle                                                               */

int ecurl_multi_open(ecurl_multi *m, long max_conn, ecurl_error *err)
{
    m->max_conn = max_conn;
    m->cfg.pipewait = 1;
    m->multi = curl_multi_init();
    if (!m->multi ||
        curl_multi_setopt(m->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_conn) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, max_conn) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, (void *)m) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_timer) != CURLM_OK ||
        curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, (void *)m) != CURLM_OK) {
        ecurl_error_set(err, ECURL_KIND_OOM, -1, "cannot create a libcurl multi handle");
        return -1;
    }
    return 0;
}

void ecurl_multi_close(ecurl_multi *m)
{
    if (m->closed)
        return;
    m->closed = 1;
    /* Easy handles leave the multi handle first, then are cleaned up; the multi, then the share, last. */
    free_list(m, &m->running);
    free_list(m, &m->queued);
    free_list(m, &m->done);
    if (m->multi) {
        /* Its socket callback may still run in here (closing connections): the tables stay until after. */
        curl_multi_cleanup(m->multi);
        m->multi = NULL;
    }
    free(m->socks);
    m->socks = NULL;
    m->nsocks = m->hisock = 0;
    free(m->dirty);
    m->dirty = NULL;
    m->ndirty = m->capdirty = 0;
    free(m->pfds);
    m->pfds = NULL;
    m->cappfds = 0;
    m->timer_set = 0;
    ecurl_config_release(&m->cfg);
}

/* ------------------------------------------------------------------------ */
/* transfers                                                                */

/*
 * A transfer that got a connection slot starts at once, not at the next
 * poll: libcurl's timer for it is due now, and running it sends the
 * request (or starts the connect) while the caller prepares its next call.
 * A batch of submissions then overlaps its own preparation. Only libcurl
 * runs here, never Lua; what finishes waits in done for the next drive,
 * and the timeout says 0 meanwhile. A failure leaves the timer due, so the
 * next drive runs it again and reports it.
 */
static int timer_due(const ecurl_multi *m);

static void kick(ecurl_multi *m)
{
    int running = 0;
    CURLMcode mc;

    if (m->closed || !timer_due(m))
        return;
    m->timer_set = 0;
    mc = curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (mc != CURLM_OK && !m->timer_set) {
        m->timer_set = 1;
        m->timer_at_ms = now_ms();
    }
    collect(m);
}

int64_t ecurl_multi_submit(ecurl_multi *m, ecurl_mitem *it, long timeout_ms, long connect_timeout_ms)
{
    it->timeout_ms = timeout_ms;
    it->connect_timeout_ms = connect_timeout_ms;
    it->id = ++m->next_id;
    list_push(&m->queued, it);
    if (start_queued(m) > 0)
        kick(m);
    return it->id;
}

int ecurl_multi_cancel(ecurl_multi *m, int64_t id)
{
    ecurl_mlist *lists[3];
    int i;

    if (m->closed)
        return 0;
    lists[0] = &m->queued;
    lists[1] = &m->running;
    lists[2] = &m->done;
    for (i = 0; i < 3; i++) {
        ecurl_mitem *it = list_find(lists[i], id);
        if (it) {
            list_unlink(lists[i], it);
            ecurl_multi_item_free(m, it);
            start_queued(m);
            return 1;
        }
    }
    return 0;
}

ecurl_mitem *ecurl_multi_take_done(ecurl_multi *m)
{
    ecurl_mitem *it;
    if (m->closed || !m->done.head)
        return NULL;
    it = m->done.head;
    list_unlink(&m->done, it);
    return it;
}

/* ------------------------------------------------------------------------ */
/* driving                                                                  */

long ecurl_multi_timer_ms(const ecurl_multi *m)
{
    double d;
    long ms;

    if (m->closed || !m->timer_set)
        return -1;
    d = m->timer_at_ms - now_ms();
    if (d <= 0)
        return 0;
    if (d > 2147483647.0)
        return 2147483647L;
    ms = (long)d;
    return (double)ms < d ? ms + 1 : ms; /* never early */
}

static int timer_due(const ecurl_multi *m)
{
    return m->timer_set && m->timer_at_ms <= now_ms();
}

/* The first failure wins; an aborted callback means one of ours ran out of memory. */
static CURLMcode keep_first(CURLMcode first, CURLMcode mc, const ecurl_multi *m)
{
    if (first != CURLM_OK)
        return first;
#if LIBCURL_VERSION_NUM >= 0x075100
    if (mc == CURLM_ABORTED_BY_CALLBACK && m->callback_oom)
        return CURLM_OUT_OF_MEMORY;
#else
    (void)m;
#endif
    return mc;
}

/*
 * After socket actions: run the timer when it is due (one-shot: libcurl
 * calls the timer callback again if it wants another), collect what
 * finished, start what is queued, and go round while that gave libcurl
 * something to do at once.
 */
static CURLMcode settle(ecurl_multi *m, CURLMcode first)
{
    int round, running = 0;

    for (round = 0; round < DRIVE_ROUNDS && !m->closed; round++) {
        if (timer_due(m)) {
            m->timer_set = 0;
            first = keep_first(first, curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running),
                               m);
        }
        collect(m);
        if (start_queued(m) == 0 && !timer_due(m))
            break;
    }
    return first;
}

size_t ecurl_multi_watched_count(const ecurl_multi *m)
{
    size_t fd, n = 0;
    for (fd = 0; fd < m->hisock; fd++) {
        if (m->socks[fd] & S_WANT)
            n++;
    }
    return n;
}

size_t ecurl_multi_watched(const ecurl_multi *m, ecurl_sockchange *out, size_t cap)
{
    size_t fd, n = 0;
    for (fd = 0; fd < m->hisock && n < cap; fd++) {
        unsigned int want = m->socks[fd] & S_WANT;
        if (want) {
            out[n].fd = (int)fd;
            out[n].want = (int)want;
            n++;
        }
    }
    return n;
}

CURLMcode ecurl_multi_drive(ecurl_multi *m, int wait_ms, int *nready)
{
    struct pollfd *p;
    size_t fd, n = 0, i, need;
    long t;
    int rc, running = 0;
    CURLMcode first = CURLM_OK;

    *nready = 0;
    if (m->closed)
        return CURLM_BAD_HANDLE;
    start_queued(m);
    if (m->done.n > 0 || wait_ms < 0)
        wait_ms = 0; /* a result is waiting: never block */
    t = ecurl_multi_timer_ms(m);
    if (t >= 0 && t < (long)wait_ms)
        wait_ms = (int)t;

    need = ecurl_multi_watched_count(m);
    if (need > m->cappfds) {
        void *np = realloc(m->pfds, need * sizeof(struct pollfd));
        if (!np)
            return CURLM_OUT_OF_MEMORY;
        m->pfds = np;
        m->cappfds = need;
    }
    p = (struct pollfd *)m->pfds;
    for (fd = 0; fd < m->hisock && n < need; fd++) {
        unsigned int want = m->socks[fd] & S_WANT;
        if (!want)
            continue;
        p[n].fd = (int)fd;
        p[n].events = (short)(((want & ECURL_WANT_READ) ? POLLIN : 0) | ((want & ECURL_WANT_WRITE) ? POLLOUT : 0));
        p[n].revents = 0;
        n++;
    }
    rc = poll(n ? p : NULL, (nfds_t)n, wait_ms);
    if (rc < 0 && errno != EINTR)
        return CURLM_INTERNAL_ERROR;
    for (i = 0; rc > 0 && i < n && !m->closed; i++) {
        short re = p[i].revents;
        int ev = 0;
        if (!re)
            continue;
        (*nready)++;
        if ((re & (POLLIN | POLLPRI | POLLHUP | POLLERR)) && (p[i].events & POLLIN))
            ev |= CURL_CSELECT_IN;
        if ((re & (POLLOUT | POLLHUP | POLLERR)) && (p[i].events & POLLOUT))
            ev |= CURL_CSELECT_OUT;
        if (re & (POLLERR | POLLNVAL))
            ev |= CURL_CSELECT_ERR;
        /* A socket closed by an earlier action in this loop is unknown to libcurl now: it ignores it. */
        first = keep_first(first, curl_multi_socket_action(m->multi, (curl_socket_t)p[i].fd, ev, &running), m);
    }
    if (m->closed)
        return first;
    return settle(m, first);
}

CURLMcode ecurl_multi_action(ecurl_multi *m, curl_socket_t fd, int ev_bitmask)
{
    int running = 0;
    CURLMcode first = CURLM_OK;

    if (m->closed)
        return CURLM_BAD_HANDLE;
    start_queued(m);
    if (fd == CURL_SOCKET_TIMEOUT)
        m->timer_set = 0; /* one-shot: libcurl sets it again if it wants another */
    first = keep_first(first, curl_multi_socket_action(m->multi, fd, ev_bitmask, &running), m);
    if (m->closed)
        return first;
    return settle(m, first);
}

/* ------------------------------------------------------------------------ */
/* what a host's event loop learns                                          */

size_t ecurl_multi_changes_bound(const ecurl_multi *m)
{
    return 2 * m->ndirty;
}

size_t ecurl_multi_changes(ecurl_multi *m, ecurl_sockchange *out, size_t cap)
{
    size_t i, n = 0, keep = 0;

    for (i = 0; i < m->ndirty; i++) {
        int fd = m->dirty[i];
        unsigned int st = m->socks[fd];
        unsigned int want = st & S_WANT, dw = (st & S_DW) >> S_DW_SHIFT;

        if (n + 2 > cap) {
            m->dirty[keep++] = fd; /* no room: reported next time */
            continue;
        }
        st &= ~S_DIRTY;
        if (st & S_STALE) {
            out[n].fd = fd;
            out[n].want = ECURL_WANT_REMOVE;
            n++;
            st &= ~(S_STALE | S_DELIVERED | S_DW);
        }
        if (want) {
            if (!(st & S_DELIVERED) || dw != want) {
                out[n].fd = fd;
                out[n].want = (int)want;
                n++;
                st = (st & ~S_DW) | (want << S_DW_SHIFT) | S_DELIVERED;
            }
        } else if (st & S_DELIVERED) {
            out[n].fd = fd;
            out[n].want = ECURL_WANT_REMOVE;
            n++;
            st &= ~(S_DELIVERED | S_DW);
        }
        m->socks[fd] = (unsigned char)st;
    }
    m->ndirty = keep;
    return n;
}
