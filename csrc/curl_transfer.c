#include "curl_transfer.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */

static double now_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* ASCII-only on purpose: the C library's tolower depends on the locale. */
static int ascii_ieq(const char *a, size_t alen, const char *b)
{
    size_t i;
    for (i = 0; i < alen; i++) {
        if (b[i] == '\0' || lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    }
    return b[alen] == '\0';
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

static void copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Error messages end up in logs: never echo control bytes from the caller. */
static void printable_copy(char *dst, size_t cap, const char *src, size_t len)
{
    size_t i, n = len < cap - 1 ? len : cap - 1;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    dst[n] = '\0';
}

void ecurl_error_set(ecurl_error *err, ecurl_kind kind, int curl_code, const char *fmt, ...)
{
    va_list ap;
    err->kind = kind;
    err->retryable = 0;
    err->curl_code = curl_code;
    va_start(ap, fmt);
    if (vsnprintf(err->message, sizeof err->message, fmt, ap) < 0)
        copy_bounded(err->message, sizeof err->message, "error");
    va_end(ap);
}

const char *ecurl_kind_name(ecurl_kind kind)
{
    switch (kind) {
    case ECURL_KIND_CONFIG: return "config";
    case ECURL_KIND_NETWORK: return "network";
    case ECURL_KIND_TIMEOUT: return "timeout";
    case ECURL_KIND_TLS: return "tls";
    case ECURL_KIND_TOO_LARGE: return "too_large";
    case ECURL_KIND_OOM: return "oom";
    case ECURL_KIND_UNKNOWN: return "unknown";
    case ECURL_KIND_NONE: break;
    }
    return "network";
}

const char *ecurl_http_version_name(long v)
{
    switch (v) {
    case CURL_HTTP_VERSION_1_0: return "1.0";
    case CURL_HTTP_VERSION_1_1: return "1.1";
    case CURL_HTTP_VERSION_2_0: return "2";
#if LIBCURL_VERSION_NUM >= 0x074200
    case CURL_HTTP_VERSION_3: return "3";
#endif
    default: return NULL;
    }
}

static void oom(ecurl_error *err)
{
    ecurl_error_set(err, ECURL_KIND_OOM, -1, "out of memory");
}

int ecurl_global_init(void)
{
    /*
     * libcurl keeps its own reference count; we take one reference for the
     * life of the process and never give it back, because another module in
     * the same process may still be using libcurl when our objects are
     * collected. Not guarded by a lock: on a libcurl without the
     * CURL_VERSION_THREADSAFE feature the host must load us (and create the
     * first transport) before it starts threads.
     */
    static int done = 0;
    if (done)
        return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    done = 1;
    return 0;
}

/* A NUL-terminated copy of len bytes (option strings may contain no NUL). */
static char *dup_string(const char *s, size_t len)
{
    char *p = (char *)malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

int ecurl_config_init(ecurl_config *cfg, const char *ca_file, size_t ca_len, const char *user_agent,
                      size_t ua_len, size_t max_body, int allow_http_loopback, int share_dns, ecurl_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_body = max_body;
    cfg->allow_http_loopback = allow_http_loopback;
    if ((ca_file && !(cfg->ca_file = dup_string(ca_file, ca_len))) ||
        (user_agent && !(cfg->user_agent = dup_string(user_agent, ua_len)))) {
        ecurl_error_set(err, ECURL_KIND_OOM, -1, "out of memory");
        return -1;
    }
    cfg->urls = (ecurl_url_cache *)calloc(1, sizeof *cfg->urls);
    if (!cfg->urls) {
        ecurl_error_set(err, ECURL_KIND_OOM, -1, "out of memory");
        return -1;
    }
    if (ecurl_global_init() != 0) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "curl_global_init failed");
        return -1;
    }
    cfg->share = curl_share_init();
    if (!cfg->share ||
        (share_dns && curl_share_setopt(cfg->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) ||
        curl_share_setopt(cfg->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        ecurl_error_set(err, ECURL_KIND_OOM, -1, "cannot create a libcurl share handle");
        return -1;
    }
    return 0;
}

/* ASCII case-insensitive: "HTTP://" names the same scheme. */
static int has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t i, n = strlen(prefix);
    if (len < n)
        return 0;
    for (i = 0; i < n; i++) {
        if (lower((unsigned char)s[i]) != lower((unsigned char)prefix[i]))
            return 0;
    }
    return 1;
}

const char *ecurl_proxy_problem(const char *s, size_t len, int is_list)
{
    static const char *const schemes[] = { "http://", "https://", "socks4://", "socks4a://",
                                           "socks5://", "socks5h://", NULL };
    size_t i;

    if (len > ECURL_PROXY_MAX)
        return "is too long";
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (c == ' ' && !is_list))
            return is_list ? "contains a control character" : "contains a space or a control character";
    }
    if (is_list || len == 0)
        return NULL;
    for (i = 0; schemes[i]; i++) {
        if (has_prefix(s, len, schemes[i]) && len > strlen(schemes[i]))
            return NULL;
    }
    return "must be a URL: http://, https://, socks4://, socks4a://, socks5:// or socks5h:// and a host";
}

int ecurl_config_set_proxy(ecurl_config *cfg, const char *proxy, size_t proxy_len, const char *noproxy,
                           size_t noproxy_len, ecurl_error *err)
{
    const char *why = NULL;

    if (proxy && (why = ecurl_proxy_problem(proxy, proxy_len, 0)) != NULL) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "proxy %s", why);
        return -1;
    }
    if (noproxy && (why = ecurl_proxy_problem(noproxy, noproxy_len, 1)) != NULL) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "no_proxy %s", why);
        return -1;
    }
    if ((proxy && !(cfg->proxy = dup_string(proxy, proxy_len))) ||
        (noproxy && !(cfg->noproxy = dup_string(noproxy, noproxy_len)))) {
        oom(err);
        return -1;
    }
    return 0;
}

static void url_entry_clear(ecurl_url_entry *e)
{
    free(e->url);
    e->url = NULL;
    e->len = 0;
    if (e->parsed) {
        curl_url_cleanup(e->parsed);
        e->parsed = NULL;
    }
}

void ecurl_config_release(ecurl_config *cfg)
{
    if (cfg->urls) {
        int i;
        for (i = 0; i < ECURL_URL_CACHE; i++)
            url_entry_clear(&cfg->urls->e[i]);
        free(cfg->urls);
        cfg->urls = NULL;
    }
    if (cfg->share) {
        curl_share_cleanup(cfg->share);
        cfg->share = NULL;
    }
    /* The config owns these copies; the const is for the transfers it lends them to. */
    free((void *)cfg->ca_file);
    cfg->ca_file = NULL;
    free((void *)cfg->user_agent);
    cfg->user_agent = NULL;
    free((void *)cfg->proxy);
    cfg->proxy = NULL;
    free((void *)cfg->noproxy);
    cfg->noproxy = NULL;
}

/* ------------------------------------------------------------------------ */
/* validation                                                               */

static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_token(const char *s, size_t len)
{
    size_t i;
    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

int ecurl_valid_field_value(const char *v, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

/* One decimal octet, 0-255, without leading zeros (those read as octal to some parsers). */
static const char *parse_octet(const char *p, int *out)
{
    int v = 0, n = 0;
    if (*p == '0' && p[1] >= '0' && p[1] <= '9')
        return NULL;
    while (*p >= '0' && *p <= '9' && n < 3) {
        v = v * 10 + (*p - '0');
        p++;
        n++;
    }
    if (n == 0 || v > 255 || (*p >= '0' && *p <= '9'))
        return NULL;
    *out = v;
    return p;
}

/*
 * The host as libcurl's URL parser sees it (IPv4 forms normalised to dotted
 * decimal, IPv6 in brackets), so the check and the connection agree.
 * Anything unusual counts as "not loopback", which only makes us stricter.
 * The rule is endaoment.partner.net.is_loopback_host's, case for case
 * (spec/net_spec.lua runs both on one table).
 */
int ecurl_is_loopback_host(const char *h)
{
    int i, octet = 0;
    const char *p = h;

    if (ascii_ieq(h, strlen(h), "localhost") || strcmp(h, "[::1]") == 0)
        return 1;
    for (i = 0; i < 4; i++) {
        p = parse_octet(p, &octet);
        if (!p || (i == 0 && octet != 127))
            return 0;
        if (i < 3) {
            if (*p != '.')
                return 0;
            p++;
        }
    }
    return *p == '\0';
}

/*
 * Whether the host as written in url (after "://" and any user info, before
 * the port, path, query or fragment) is exactly the host libcurl parsed,
 * ASCII case aside. libcurl normalises numeric forms ("127.1", "0x7f.0.0.1",
 * "2130706433" all become "127.0.0.1"); the loopback rule is about the
 * canonical form only, as endaoment.partner.net's, which sees the written one.
 */
static int written_host_is(const char *url, const char *host)
{
    const char *p = strstr(url, "://"), *end, *q;
    size_t n;

    if (!p)
        return 0;
    p += 3;
    end = p + strcspn(p, "/?#");
    for (q = end; q > p; q--) {
        if (q[-1] == '@') {
            p = q;
            break;
        }
    }
    if (*p == '[') {
        const char *close = (const char *)memchr(p, ']', (size_t)(end - p));
        if (!close)
            return 0;
        n = (size_t)(close + 1 - p);
    } else {
        const char *colon = (const char *)memchr(p, ':', (size_t)(end - p));
        n = (size_t)((colon ? colon : end) - p);
    }
    return ascii_ieq(p, n, host);
}

/* ------------------------------------------------------------------------ */
/* libcurl callbacks: C buffers only, never Lua                             */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    ecurl_transfer *tr = (ecurl_transfer *)userp;
    size_t n = size * nmemb;

    /*
     * CURLOPT_MAXFILESIZE only sees a Content-Length; a chunked or
     * close-delimited body is capped here (returning less than n makes
     * libcurl abort with CURLE_WRITE_ERROR and drop the connection).
     */
    if (n > tr->max_body - tr->body.len) {
        tr->stop = ECURL_STOP_BODY;
        return 0;
    }
    if (strbuf_append(&tr->body, data, n) != STRBUF_OK) {
        tr->stop = ECURL_STOP_OOM;
        return 0;
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    ecurl_transfer *tr = (ecurl_transfer *)userp;
    size_t n = size * nmemb, len = n;
    int rc;

    if (n > ECURL_MAX_HEADER_BYTES - tr->head_seen) {
        tr->stop = ECURL_STOP_HEADERS;
        return 0;
    }
    tr->head_seen += n;
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;

    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* A new status line: fields gathered so far were a 1xx (or proxy) response's. */
        strbuf_reset(&tr->head);
        return n;
    }
    if (len == 0)
        return n;
    if ((data[0] == ' ' || data[0] == '\t') && tr->head.len > 0) {
        /* obs-fold (RFC 9112 5.2): join the continuation to the previous field with one space. */
        while (len > 0 && (*data == ' ' || *data == '\t')) {
            data++;
            len--;
        }
        tr->head.data[tr->head.len - 1] = ' ';
    }
    rc = strbuf_append(&tr->head, data, len);
    if (rc == STRBUF_OK)
        rc = strbuf_putc(&tr->head, '\n');
    if (rc != STRBUF_OK) {
        tr->stop = ECURL_STOP_OOM;
        return 0;
    }
    return n;
}

/*
 * Runs each time the request is about to go on the wire: the first time,
 * and again whenever libcurl resends it by itself after a reused connection
 * turned out dead. Counts, and refuses a send beyond max_sends.
 */
static int on_prereq(void *userp, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port)
{
    ecurl_transfer *tr = (ecurl_transfer *)userp;

    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    if (tr->max_sends > 0 && tr->sends >= tr->max_sends) {
        tr->resend_refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    tr->sends++;
    return CURL_PREREQFUNC_OK;
}

/* ------------------------------------------------------------------------ */
/* transfer life cycle                                                      */

int ecurl_easy_reuse_safe(void)
{
    /* Never: libcurl before 8.1.0 writes to freed memory on a reused handle (curl issue 11101). */
    return 0;
}

void ecurl_transfer_init(ecurl_transfer *tr)
{
    memset(tr, 0, sizeof *tr);
    strbuf_init(&tr->req_body);
    strbuf_init(&tr->body);
    strbuf_init(&tr->head);
}

void ecurl_transfer_release(ecurl_transfer *tr)
{
    if (tr->easy) {
        /*
         * The handle still points at our slist, CURLU, body and error
         * buffer. A reset forgets those pointers but keeps what makes the
         * next request fast: live connections, DNS and TLS session caches.
         */
        curl_easy_reset(tr->easy);
        /*
         * The reset turned signals back on, and curl_easy_cleanup then saves,
         * ignores and restores SIGPIPE around itself: three system calls per
         * request, a tenth of a request's cost on a virtual machine.
         */
        curl_easy_setopt(tr->easy, CURLOPT_NOSIGNAL, 1L);
        tr->easy = NULL;
    }
    if (tr->headers) {
        curl_slist_free_all(tr->headers);
        tr->headers = NULL;
    }
    if (tr->url) {
        curl_url_cleanup(tr->url);
        tr->url = NULL;
    }
    strbuf_free(&tr->req_body);
    tr->send = NULL;
    tr->send_len = 0;
    if (tr->keep_buffers && tr->body.cap <= ECURL_KEEP_BUFFER_MAX)
        strbuf_reset(&tr->body);
    else
        strbuf_free(&tr->body);
    if (tr->keep_buffers && tr->head.cap <= ECURL_KEEP_BUFFER_MAX)
        strbuf_reset(&tr->head);
    else
        strbuf_free(&tr->head);
    tr->head_seen = 0;
    tr->stop = ECURL_STOP_NONE;
    tr->has_body = 0;
    tr->loopback_http = 0;
    tr->gave_accept = 0;
    tr->gave_expect = 0;
    tr->gave_user_agent = 0;
    tr->gave_content_type = 0;
    tr->no_resend = 0;
    tr->max_sends = 0;
    tr->method[0] = '\0';
    tr->host[0] = '\0';
    tr->errbuf[0] = '\0';
    tr->sends = 0;
    tr->resend_refused = 0;
    tr->code = CURLE_OK;
    tr->status = 0;
    tr->http_version = 0;
    tr->reused = 0;
    tr->elapsed_ms = 0.0;
}

void ecurl_transfer_end(ecurl_transfer *tr, CURL *easy)
{
    /*
     * The handle goes first, while the header list, CURLU, body and error
     * buffer it points at are still alive: it needs no reset, and with
     * CURLOPT_NOSIGNAL still set libcurl leaves SIGPIPE alone (no save,
     * ignore and restore around the cleanup).
     */
    if (tr->easy == easy)
        tr->easy = NULL;
    if (easy)
        curl_easy_cleanup(easy);
    ecurl_transfer_release(tr);
}

static const ecurl_url_entry *url_lookup(const ecurl_url_cache *c, const char *url, size_t len)
{
    int i;

    if (!c)
        return NULL;
    for (i = 0; i < ECURL_URL_CACHE; i++)
        if (c->e[i].url && c->e[i].len == len && memcmp(c->e[i].url, url, len) == 0)
            return &c->e[i];
    return NULL;
}

/* Keeps a URL that passed every check. Best effort: out of memory only means no entry. */
static void url_remember(ecurl_url_cache *c, const char *url, size_t len, const CURLU *parsed,
                         const char *host, int loopback_http)
{
    ecurl_url_entry *e;
    char *copy;
    CURLU *dup;

    if (!c)
        return;
    copy = dup_string(url, len);
    dup = curl_url_dup((CURLU *)parsed);
    if (!copy || !dup) {
        free(copy);
        if (dup)
            curl_url_cleanup(dup);
        return;
    }
    e = &c->e[c->next];
    c->next = (c->next + 1) % ECURL_URL_CACHE;
    url_entry_clear(e);
    e->url = copy;
    e->len = len;
    e->parsed = dup;
    e->loopback_http = loopback_http;
    copy_bounded(e->host, sizeof e->host, host);
}

static int method_is(const ecurl_transfer *tr, const char *m)
{
    return strcmp(tr->method, m) == 0;
}

int ecurl_transfer_begin(ecurl_transfer *tr, const ecurl_config *cfg, const ecurl_request *req,
                         ecurl_error *err)
{
    char *scheme = NULL, *host = NULL;
    const ecurl_url_entry *known;
    CURLUcode uc;
    size_t mlen, ulen;
    int http;

    ecurl_transfer_release(tr);

    mlen = strlen(req->method);
    if (mlen >= sizeof tr->method || !is_token(req->method, mlen)) {
        char shown[40];
        printable_copy(shown, sizeof shown, req->method, mlen);
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "invalid HTTP method '%s'", shown);
        return -1;
    }
    memcpy(tr->method, req->method, mlen + 1);
    tr->no_resend = req->no_resend != 0;
    tr->max_sends = req->no_resend ? 1 : (req->max_sends > 0 ? req->max_sends : 0);

    ulen = strlen(req->url);
    known = url_lookup(cfg->urls, req->url, ulen);
    if (known) {
        /* Checked before, with this config: the same verdict, without the parse. */
        tr->url = curl_url_dup(known->parsed);
        if (!tr->url) {
            oom(err);
            return -1;
        }
        copy_bounded(tr->host, sizeof tr->host, known->host);
        tr->loopback_http = known->loopback_http;
        goto body;
    }
    tr->url = curl_url();
    if (!tr->url) {
        oom(err);
        return -1;
    }
    /* No guessing and no default scheme: the caller names http or https explicitly. */
    uc = curl_url_set(tr->url, CURLUPART_URL, req->url, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(tr->url, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(tr->url, CURLUPART_HOST, &host, 0);
    if (uc != CURLUE_OK) {
        char shown[128];
        curl_free(scheme);
        if (uc == CURLUE_OUT_OF_MEMORY) {
            oom(err);
            return -1;
        }
        printable_copy(shown, sizeof shown, req->url, strlen(req->url));
#if LIBCURL_VERSION_NUM >= 0x075000
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "invalid URL '%s': %s", shown,
                        curl_url_strerror(uc));
#else
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "invalid URL '%s' (CURLUcode %d)", shown,
                        (int)uc);
#endif
        return -1;
    }
    copy_bounded(tr->host, sizeof tr->host, host);

    http = strcmp(scheme, "http") == 0;
    if (!http && strcmp(scheme, "https") != 0) {
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                        "unsupported URL scheme '%s': https is required", scheme);
        goto fail;
    }
    if (http) {
        if (!ecurl_is_loopback_host(host) || !written_host_is(req->url, host)) {
            ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                            "https is required: refusing plain http to %s (plain http is only "
                            "allowed to loopback: 127.0.0.0/8, localhost, ::1)",
                            tr->host);
            goto fail;
        }
        if (!cfg->allow_http_loopback) {
            ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                            "https is required: plain http to %s is disabled "
                            "(allow_http_loopback = false)",
                            tr->host);
            goto fail;
        }
        tr->loopback_http = 1;
    }
    url_remember(cfg->urls, req->url, ulen, tr->url, host, tr->loopback_http);
    curl_free(scheme);
    curl_free(host);
    scheme = host = NULL;

body:
    if (req->body) {
        if (method_is(tr, "HEAD")) {
            ecurl_error_set(err, ECURL_KIND_CONFIG, -1, "a HEAD request cannot have a body");
            return -1;
        }
        /*
         * A private copy: with the multi interface the caller's string may
         * be gone long before libcurl sends it. strbuf_cstr also makes an
         * empty body a valid pointer (libcurl treats NULL as "use a read
         * callback").
         */
        if (req->body_lent) {
            tr->send = req->body;
            tr->send_len = req->body_len;
        } else {
            if (strbuf_append(&tr->req_body, req->body, req->body_len) != STRBUF_OK ||
                strbuf_cstr(&tr->req_body) == NULL) {
                oom(err);
                return -1;
            }
            tr->send = tr->req_body.data;
            tr->send_len = tr->req_body.len;
        }
        tr->has_body = 1;
    }

    tr->max_body = cfg->max_body;
    tr->body.limit = cfg->max_body;
    return 0;

fail:
    curl_free(scheme);
    curl_free(host);
    return -1;
}

/* Compares lengths first: most names differ in length, and the literal's is known. */
#define NAME_IS(name, nlen, lit) ((nlen) == sizeof(lit) - 1 && ascii_ieq(name, nlen, lit))

int ecurl_transfer_add_header(ecurl_transfer *tr, const char *name, size_t nlen, const char *value,
                              size_t vlen, ecurl_error *err)
{
    /* Every header the SDK sends fits here; a longer line goes through the heap. */
    char small[512], *line = small, shown[72];
    size_t need = nlen + 2 + vlen + 1;
    struct curl_slist *list;

    if (!is_token(name, nlen)) {
        printable_copy(shown, sizeof shown, name, nlen);
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                        "invalid header name '%s': must be an RFC 9110 token", shown);
        return -1;
    }
    if (!ecurl_valid_field_value(value, vlen)) {
        printable_copy(shown, sizeof shown, name, nlen);
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                        "invalid value for header '%s': contains CR, LF, NUL or another "
                        "control character",
                        shown);
        return -1;
    }
    /*
     * The transport frames the request itself: a caller's copy of these
     * could contradict it (request smuggling) or break connection reuse.
     * The same four names endaoment.partner.net.RESERVED_HEADERS refuses at
     * call time, and the nginx transport refuses too.
     */
    if (NAME_IS(name, nlen, "content-length") || NAME_IS(name, nlen, "transfer-encoding") ||
        NAME_IS(name, nlen, "host") || NAME_IS(name, nlen, "connection")) {
        printable_copy(shown, sizeof shown, name, nlen);
        ecurl_error_set(err, ECURL_KIND_CONFIG, -1,
                        "header '%s' is set by the transport and cannot be given", shown);
        return -1;
    }
    if (NAME_IS(name, nlen, "accept"))
        tr->gave_accept = 1;
    else if (NAME_IS(name, nlen, "expect"))
        tr->gave_expect = 1;
    else if (NAME_IS(name, nlen, "user-agent"))
        tr->gave_user_agent = 1;
    else if (NAME_IS(name, nlen, "content-type"))
        tr->gave_content_type = 1;

    if (need > sizeof small) {
        line = (char *)malloc(need);
        if (!line) {
            oom(err);
            return -1;
        }
    }
    memcpy(line, name, nlen);
    if (vlen == 0) {
        /* "Name;" is libcurl's spelling of an empty header; "Name:" would remove it. */
        line[nlen] = ';';
        line[nlen + 1] = '\0';
    } else {
        line[nlen] = ':';
        line[nlen + 1] = ' ';
        memcpy(line + nlen + 2, value, vlen);
        line[nlen + 2 + vlen] = '\0';
    }
    /* libcurl copies the line. */
    list = curl_slist_append(tr->headers, line);
    if (line != small)
        free(line);
    if (!list) {
        oom(err);
        return -1;
    }
    tr->headers = list;
    return 0;
}

static int append_internal(ecurl_transfer *tr, const char *line)
{
    struct curl_slist *list = curl_slist_append(tr->headers, line);
    if (!list)
        return -1;
    tr->headers = list;
    return 0;
}

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if ((rc = curl_easy_setopt(easy, opt, val)) != CURLE_OK)                                   \
            goto fail;                                                                             \
    } while (0)

int ecurl_transfer_setup(ecurl_transfer *tr, CURL *easy, const ecurl_config *cfg,
                         const ecurl_request *req, ecurl_error *err)
{
    CURLcode rc = CURLE_OK;

    /* "Expect:" turns off 100-continue: one round trip less, and no curl #11678 on reuse. */
    /* "Accept:" and "Content-Type:" drop libcurl's defaults (any type; form-urlencoded). */
    if ((!tr->gave_expect && append_internal(tr, "Expect:") != 0) ||
        (!tr->gave_accept && append_internal(tr, "Accept:") != 0) ||
        (!tr->gave_content_type && append_internal(tr, "Content-Type:") != 0)) {
        oom(err);
        return -1;
    }

    /*
     * easy is a new handle (ecurl_easy_reuse_safe: never a second transfer
     * on one), so there is nothing to reset; keep-alive connections, DNS and
     * TLS sessions live in the multi handle.
     *
     * When a request fails on a reused connection that the server had
     * already closed, libcurl sends it again by itself on a fresh
     * connection (up to 5 times), even a POST the server may have received.
     * libcurl has no option to turn that off; on_prereq counts every send
     * (and refuses those past max_sends), and a request that must never be
     * resent gets a fresh connection, on which libcurl does not resend.
     */
    tr->easy = easy;
    tr->errbuf[0] = '\0';
    tr->sends = 0;
    tr->resend_refused = 0;

    SET(CURLOPT_ERRORBUFFER, tr->errbuf);
    SET(CURLOPT_PRIVATE, (void *)tr);
    /* A library must not install signal handlers (SIGALRM for DNS timeouts) in its host. */
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_CURLU, tr->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, tr->loopback_http ? "http,https" : "https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
    SET(CURLOPT_PROTOCOLS, tr->loopback_http ? (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)
                                             : (long)CURLPROTO_HTTPS);
    SET(CURLOPT_REDIR_PROTOCOLS, (long)CURLPROTO_HTTPS);
#endif
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (cfg->ca_file) {
        SET(CURLOPT_CAINFO, cfg->ca_file);
        /*
         * Debian builds libcurl with a default CApath; while one is set,
         * libcurl does not cache the parsed CA store (CURLOPT_CA_CACHE_TIMEOUT)
         * and re-reads the bundle on every new TLS connection (~18 ms).
         */
        SET(CURLOPT_CAPATH, (char *)NULL);
    }
    if (cfg->share)
        SET(CURLOPT_SHARE, cfg->share);
    /* Below common server keep-alive timeouts, so we rarely reuse a socket the server is closing. */
    SET(CURLOPT_MAXAGE_CONN, ECURL_MAXAGE_CONN);
    SET(CURLOPT_TIMEOUT_MS, req->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)cfg->max_body);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)tr);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)tr);
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    SET(CURLOPT_PREREQDATA, (void *)tr);
    if (tr->no_resend) {
        /* libcurl resends only on a reused connection: this one is new, and closed afterwards. */
        SET(CURLOPT_FRESH_CONNECT, 1L);
        SET(CURLOPT_FORBID_REUSE, 1L);
    }
    if (cfg->pipewait)
        SET(CURLOPT_PIPEWAIT, 1L);
    if (cfg->user_agent && !tr->gave_user_agent)
        SET(CURLOPT_USERAGENT, cfg->user_agent);
    if (tr->loopback_http) {
        /* A proxy (given or from the environment) never sees plain-text loopback traffic. */
        SET(CURLOPT_PROXY, "");
    } else {
        if (cfg->proxy)
            SET(CURLOPT_PROXY, cfg->proxy);
        if (cfg->noproxy)
            SET(CURLOPT_NOPROXY, cfg->noproxy);
    }
    SET(CURLOPT_HTTPHEADER, tr->headers);

    if (method_is(tr, "HEAD")) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (method_is(tr, "GET") && !tr->has_body) {
        SET(CURLOPT_HTTPGET, 1L);
    } else {
        int empty_body = !tr->has_body &&
                         (method_is(tr, "POST") || method_is(tr, "PUT") || method_is(tr, "PATCH"));
        if (tr->has_body || empty_body) {
            /* Size first: setting it after POSTFIELDS can drop the pointer. */
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(tr->has_body ? tr->send_len : 0));
            SET(CURLOPT_POSTFIELDS, tr->has_body ? tr->send : "");
        }
        if (!method_is(tr, "POST"))
            SET(CURLOPT_CUSTOMREQUEST, tr->method);
    }

    tr->started_ms = now_ms();
    return 0;

fail:
    if (rc == CURLE_OUT_OF_MEMORY)
        oom(err);
    else
        ecurl_error_set(err, ECURL_KIND_CONFIG, (int)rc, "libcurl rejected an option: %s",
                        curl_easy_strerror(rc));
    return -1;
}

#undef SET

void ecurl_transfer_complete(ecurl_transfer *tr, CURLcode code)
{
    long status = 0, connects = -1;

    tr->code = code;
    tr->http_version = 0;
    tr->elapsed_ms = now_ms() - tr->started_ms;
    if (curl_easy_getinfo(tr->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
        status = 0;
    tr->status = status;
    if (curl_easy_getinfo(tr->easy, CURLINFO_NUM_CONNECTS, &connects) != CURLE_OK)
        connects = -1;
    tr->reused = connects == 0;
    if (curl_easy_getinfo(tr->easy, CURLINFO_HTTP_VERSION, &tr->http_version) != CURLE_OK)
        tr->http_version = 0;
}

/* ------------------------------------------------------------------------ */
/* results                                                                  */

static int is_tls_code(CURLcode c)
{
    switch (c) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
#if LIBCURL_VERSION_NUM >= 0x074d00
    case CURLE_SSL_CLIENTCERT:
#endif
        return 1;
    default:
        return 0;
    }
}

static void tls_error(const ecurl_transfer *tr, const ecurl_config *cfg, const char *detail,
                      ecurl_error *err)
{
    int code = (int)tr->code;

    /* Only the error-buffer text tells a wrong name from an unknown CA; both are CURLcode 60. */
    if (contains(detail, "subject name") || contains(detail, "common name") ||
        contains(detail, "does not match")) {
        ecurl_error_set(err, ECURL_KIND_TLS, code,
                        "certificate does not match host %s: use the host name the certificate "
                        "was issued for (curl error %d: %s)",
                        tr->host, code, detail);
    } else if (tr->code == CURLE_SSL_CACERT_BADFILE) {
        ecurl_error_set(err, ECURL_KIND_TLS, code,
                        "cannot load the CA certificates from %s: pass ca_file = a readable PEM "
                        "bundle (curl error %d: %s)",
                        cfg->ca_file ? cfg->ca_file : "libcurl's default bundle", code, detail);
    } else if (contains(detail, "local issuer") || contains(detail, "self-signed") ||
               contains(detail, "self signed") || contains(detail, "unable to get issuer") ||
               contains(detail, "unable to verify the first certificate")) {
        ecurl_error_set(err, ECURL_KIND_TLS, code,
                        "certificate not trusted: pass ca_file = '/path/to/ca.pem' (the CA that "
                        "signed the server's certificate) or install it in the system store "
                        "(curl error %d: %s)",
                        code, detail);
    } else {
        ecurl_error_set(err, ECURL_KIND_TLS, code, "TLS failure with %s (curl error %d: %s)",
                        tr->host, code, detail);
    }
}

int ecurl_transfer_error(const ecurl_transfer *tr, const ecurl_config *cfg, ecurl_error *err)
{
    CURLcode c = tr->code;
    int code = (int)c;
    const char *detail;

    if (c == CURLE_OK)
        return 0;
    detail = tr->errbuf[0] ? tr->errbuf : curl_easy_strerror(c);

    if (is_tls_code(c)) {
        tls_error(tr, cfg, detail, err);
        return 1;
    }
    switch (c) {
    case CURLE_OPERATION_TIMEDOUT:
        ecurl_error_set(err, ECURL_KIND_TIMEOUT, code,
                        "request to %s timed out (curl error %d: %s)", tr->host, code, detail);
        break;
    case CURLE_FILESIZE_EXCEEDED:
        ecurl_error_set(err, ECURL_KIND_TOO_LARGE, code,
                        "response body is larger than max_response_bytes = %lu (curl error %d: %s)",
                        (unsigned long)tr->max_body, code, detail);
        break;
    case CURLE_WRITE_ERROR:
        if (tr->stop == ECURL_STOP_BODY)
            ecurl_error_set(err, ECURL_KIND_TOO_LARGE, code,
                            "response body is larger than max_response_bytes = %lu (stopped "
                            "reading it)",
                            (unsigned long)tr->max_body);
        else if (tr->stop == ECURL_STOP_HEADERS)
            ecurl_error_set(err, ECURL_KIND_TOO_LARGE, code,
                            "response headers are larger than %d bytes", ECURL_MAX_HEADER_BYTES);
        else if (tr->stop == ECURL_STOP_OOM)
            ecurl_error_set(err, ECURL_KIND_OOM, code, "out of memory reading the response");
        else
            ecurl_error_set(err, ECURL_KIND_UNKNOWN, code,
                            "network error with %s (curl error %d: %s)", tr->host, code, detail);
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        if (!tr->resend_refused) {
            ecurl_error_set(err, ECURL_KIND_UNKNOWN, code,
                            "network error with %s (curl error %d: %s)", tr->host, code, detail);
        } else if (tr->no_resend) {
            ecurl_error_set(err, ECURL_KIND_NETWORK, code,
                            "the connection to %s closed after the request was sent, before any "
                            "answer, and this request must not be sent twice: not resent, so its "
                            "outcome is unknown (check it before sending it again)",
                            tr->host);
        } else {
            ecurl_error_set(err, ECURL_KIND_NETWORK, code,
                            "the connection to %s closed after the request was sent, before any "
                            "answer: not sent again, it went out %ld time%s already (max_retries)",
                            tr->host, tr->sends, tr->sends == 1 ? "" : "s");
        }
        break;
    case CURLE_OUT_OF_MEMORY:
        ecurl_error_set(err, ECURL_KIND_OOM, code, "out of memory (curl error %d: %s)", code,
                        detail);
        break;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
        ecurl_error_set(err, ECURL_KIND_CONFIG, code,
                        "request refused by libcurl (curl error %d: %s)", code, detail);
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
#if LIBCURL_VERSION_NUM >= 0x074200
    case CURLE_HTTP3:
#endif
        ecurl_error_set(err, ECURL_KIND_NETWORK, code,
                        "network error with %s (curl error %d: %s)", tr->host, code, detail);
        break;
#if LIBCURL_VERSION_NUM >= 0x074900
    case CURLE_PROXY:
        ecurl_error_set(err, ECURL_KIND_NETWORK, code,
                        "the proxy failed the connection to %s (curl error %d: %s)", tr->host, code,
                        detail);
        break;
#endif
    default:
        /* Unknown failures are not retried: for a payment a duplicate is worse than an error. */
        ecurl_error_set(err, ECURL_KIND_UNKNOWN, code,
                        "network error with %s (curl error %d: %s)", tr->host, code, detail);
        break;
    }
    return 1;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int ecurl_transfer_next_header(ecurl_transfer *tr, size_t *pos, const char **name, size_t *nlen,
                               const char **value, size_t *vlen)
{
    while (*pos < tr->head.len) {
        char *line = tr->head.data + *pos;
        size_t rest = tr->head.len - *pos;
        char *eol = (char *)memchr(line, '\n', rest);
        size_t llen = eol ? (size_t)(eol - line) : rest;
        char *colon, *v, *vend;
        size_t i, n;

        *pos += eol ? llen + 1 : llen;
        colon = (char *)memchr(line, ':', llen);
        if (!colon)
            continue;
        n = (size_t)(colon - line);
        while (n > 0 && is_ows(line[n - 1]))
            n--;
        if (n == 0)
            continue;
        for (i = 0; i < n; i++)
            line[i] = (char)lower((unsigned char)line[i]);
        v = colon + 1;
        vend = line + llen;
        while (v < vend && is_ows(*v))
            v++;
        while (vend > v && is_ows(vend[-1]))
            vend--;
        *name = line;
        *nlen = n;
        *value = v;
        *vlen = (size_t)(vend - v);
        return 1;
    }
    return 0;
}
