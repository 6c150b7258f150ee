/*
 * One HTTP exchange on a libcurl easy handle, with no Lua in it (the Lua
 * glue is csrc/curl_lua.h, csrc/curl.c and csrc/curl_lua_multi.c).
 *
 * The state of a transfer (URL, request headers, request body, response
 * buffers, limits, error buffer) lives in one struct so that the blocking
 * transport (curl.c, curl_easy_perform) and the multi engine
 * (curl_multi.c, curl_multi_socket_action + CURLMSG_DONE) share the code:
 *
 *   ecurl_transfer_begin()       parse and check the URL, copy the body
 *   ecurl_transfer_add_header()  once per caller header (validated)
 *   ecurl_transfer_setup()       reset the easy handle and apply every option
 *   ... curl_easy_perform(), or a multi handle runs it ...
 *   ecurl_transfer_complete()    collect the CURLcode, status, timing
 *   ecurl_transfer_error() / ecurl_transfer_next_header() / tr->body
 *   ecurl_transfer_release()     free everything (idempotent)
 *
 * The libcurl callbacks only append to the C buffers below and count; nothing
 * calls into Lua until the transfer is complete.
 *
 * Honest sends: libcurl sends a request again by itself when a reused
 * keep-alive connection turns out dead before any answer (up to 5 times, a
 * POST included). CURLOPT_PREREQFUNCTION runs each time a request is about to
 * go on the wire, so tr->sends counts every one of them, and a transfer
 * refuses a send beyond req->max_sends (CURLE_ABORTED_BY_CALLBACK,
 * tr->resend_refused). A request that must not be resent (req->no_resend)
 * also goes on a fresh connection that is closed afterwards: libcurl only
 * resends on a reused one.
 */
#ifndef EPARTNER_CURL_TRANSFER_H
#define EPARTNER_CURL_TRANSFER_H

#include <stddef.h>
#include <curl/curl.h>

#include "strbuf.h"

#if !defined(LIBCURL_VERSION_NUM) || LIBCURL_VERSION_NUM < 0x075000
#error "endaoment.partner.curl needs libcurl 7.80.0 or newer (CURLOPT_PREREQFUNCTION, CURLU, CURLOPT_MAXAGE_CONN)"
#endif

/* Total bytes of response header lines (all responses of one exchange). */
#define ECURL_MAX_HEADER_BYTES (64 * 1024)
/* Idle keep-alive connections older than this are not reused (seconds). */
#define ECURL_MAXAGE_CONN 30L
#define ECURL_HOST_MAX 256
#define ECURL_MESSAGE_MAX (CURL_ERROR_SIZE + 512)
#define ECURL_KEEP_BUFFER_MAX (64 * 1024)
/* Proxy URLs and no-proxy lists: longer ones are refused. */
#define ECURL_PROXY_MAX 2048

/*
 * What failed. Whether a failure is retried is not decided here: the one
 * table for every transport is endaoment.partner.retry (Lua), by kind.
 * ECURL_KIND_UNKNOWN is a failure libcurl reported that says nothing about
 * whether the request reached the server (reported as kind "network", never
 * retried: for a payment a duplicate is worse than an error).
 */
typedef enum {
    ECURL_KIND_NONE = 0,
    ECURL_KIND_CONFIG,
    ECURL_KIND_NETWORK,
    ECURL_KIND_TIMEOUT,
    ECURL_KIND_TLS,
    ECURL_KIND_TOO_LARGE,
    ECURL_KIND_OOM,
    ECURL_KIND_UNKNOWN
} ecurl_kind;

typedef struct {
    ecurl_kind kind;
    /* Always 0: retryability is decided by kind in Lua (endaoment.partner.retry). */
    int retryable;
    int curl_code; /* -1: found before libcurl ran */
    char message[ECURL_MESSAGE_MAX];
} ecurl_error;

/*
 * The last URLs a config checked, parsed: a client calls the same few URLs
 * over and over, and libcurl's URL parser was the largest single cost of
 * starting a request (5.4 k instructions). Only URLs that passed every
 * check are kept; a transfer gets its own copy (curl_url_dup), so an entry
 * can be replaced while transfers made from it still run.
 */
#define ECURL_URL_CACHE 4
typedef struct {
    char *url;
    size_t len;
    CURLU *parsed;
    int loopback_http;
    char host[ECURL_HOST_MAX];
} ecurl_url_entry;
typedef struct {
    ecurl_url_entry e[ECURL_URL_CACHE];
    unsigned next; /* the entry replaced next: round robin */
} ecurl_url_cache;

/* What belongs to the transport rather than to one request. */
typedef struct {
    const char *ca_file;    /* NULL: libcurl's compiled-in default */
    const char *user_agent; /* NULL: send none */
    const char *proxy;      /* NULL: libcurl reads the environment; "": no proxy */
    const char *noproxy;    /* NULL: libcurl reads no_proxy / NO_PROXY */
    size_t max_body;
    int allow_http_loopback;
    int pipewait; /* multi: wait for a connection that can multiplex (HTTP/2) */
    CURLSH *share; /* NULL allowed */
    ecurl_url_cache *urls; /* owned; filled by ecurl_transfer_begin */
} ecurl_config;

typedef struct {
    const char *method;
    const char *url;
    const char *body; /* NULL: no body */
    size_t body_len;
    long timeout_ms;
    long connect_timeout_ms;
    long max_sends; /* most times on the wire, libcurl's own resends included; 0: no limit */
    int no_resend;  /* never resend: a fresh connection, closed afterwards, and max_sends 1 */
    /*
     * The body outlives the transfer (the blocking transport: the Lua string
     * stays on the stack until the request returns), so it is lent to
     * libcurl instead of copied. 0: copied (the multi engine's requests
     * outlive the call that made them).
     */
    int body_lent;
} ecurl_request;

/* Why a callback stopped the transfer (libcurl then reports CURLE_WRITE_ERROR). */
enum { ECURL_STOP_NONE = 0, ECURL_STOP_BODY, ECURL_STOP_HEADERS, ECURL_STOP_OOM };

typedef struct ecurl_transfer {
    CURL *easy; /* borrowed while set up; the owner cleans it up */
    CURLU *url;
    struct curl_slist *headers;
    strbuf_t req_body;   /* the copy of the body, unless it is lent */
    const char *send;    /* the body libcurl sends: req_body.data or the lent bytes */
    size_t send_len;
    strbuf_t body;
    strbuf_t head; /* "name:value\n" lines of the latest response only */
    /*
     * Set by an owner that runs one transfer after another in this struct
     * (the blocking transport): release empties the answer's buffers
     * instead of freeing them, up to ECURL_KEEP_BUFFER_MAX each, so the
     * next answer is written into memory already allocated and in cache.
     * Cleared before the last release.
     */
    int keep_buffers;
    size_t head_seen;
    size_t max_body;
    int stop;
    int has_body;
    int loopback_http;
    int gave_accept;
    int gave_expect;
    int gave_user_agent;
    int gave_content_type;
    int no_resend;
    long max_sends;
    char method[32];
    char host[ECURL_HOST_MAX];
    char errbuf[CURL_ERROR_SIZE];
    double started_ms;
    /* counted while libcurl runs */
    long sends;         /* times the request went on the wire (CURLOPT_PREREQFUNCTION) */
    int resend_refused; /* a send beyond max_sends was stopped */
    /* results, valid after ecurl_transfer_complete() */
    CURLcode code;
    long status;
    long http_version; /* CURLINFO_HTTP_VERSION: CURL_HTTP_VERSION_1_1, _2_0, ... or 0 */
    int reused;
    double elapsed_ms;
} ecurl_transfer;

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* Once per process; later calls are no-ops. 0 on success. */
int ecurl_global_init(void);
/*
 * A transport or multi owns one config for its whole life (the strings are
 * copies, the share handle is its own) and lends it to every transfer.
 * share_dns: the share also carries the DNS cache (a multi has its own).
 * Returns 0, or -1 with err set; release frees a partial config too.
 */
int ecurl_config_init(ecurl_config *cfg, const char *ca_file, size_t ca_len, const char *user_agent,
                      size_t ua_len, size_t max_body, int allow_http_loopback, int share_dns, ecurl_error *err);
/*
 * The proxy of every transfer: proxy NULL leaves libcurl reading the
 * environment (https_proxy, HTTPS_PROXY, all_proxy, ALL_PROXY), "" turns
 * proxies off; noproxy NULL leaves libcurl reading no_proxy / NO_PROXY.
 * Plain http (loopback only) never goes through a proxy. Checked: no
 * control characters or spaces, a scheme libcurl proxies through. Returns 0,
 * or -1 with err set.
 */
int ecurl_config_set_proxy(ecurl_config *cfg, const char *proxy, size_t proxy_len, const char *noproxy,
                           size_t noproxy_len, ecurl_error *err);
/* Why a proxy URL (is_list 0) or a no-proxy list (is_list 1) is refused; NULL if it is not. */
const char *ecurl_proxy_problem(const char *s, size_t len, int is_list);
/* Idempotent. Only after every easy handle using the share is cleaned up. */
void ecurl_config_release(ecurl_config *cfg);

/*
 * Whether an easy handle may carry a second transfer. The transports never
 * reuse one: each transfer gets a new easy handle and the caches live in
 * the multi handle (curl issue 11101 in libcurl before 8.1.0).
 */
int ecurl_easy_reuse_safe(void);

void ecurl_transfer_init(ecurl_transfer *tr);
int ecurl_transfer_begin(ecurl_transfer *tr, const ecurl_config *cfg, const ecurl_request *req,
                         ecurl_error *err);
int ecurl_transfer_add_header(ecurl_transfer *tr, const char *name, size_t nlen, const char *value,
                              size_t vlen, ecurl_error *err);
int ecurl_transfer_setup(ecurl_transfer *tr, CURL *easy, const ecurl_config *cfg,
                         const ecurl_request *req, ecurl_error *err);
void ecurl_transfer_complete(ecurl_transfer *tr, CURLcode code);
/* 1 and fills err when the exchange failed; 0 when there is a response. */
int ecurl_transfer_error(const ecurl_transfer *tr, const ecurl_config *cfg, ecurl_error *err);
/* Walks the final response's header fields; the name is lowercased in place. */
int ecurl_transfer_next_header(ecurl_transfer *tr, size_t *pos, const char **name, size_t *nlen,
                               const char **value, size_t *vlen);
void ecurl_transfer_release(ecurl_transfer *tr);
/*
 * Ends a transfer for good: cleans up easy (the handle it was set up on, or
 * one that setup refused), then releases tr. A multi owner calls
 * curl_multi_remove_handle() first.
 */
void ecurl_transfer_end(ecurl_transfer *tr, CURL *easy);

void ecurl_error_set(ecurl_error *err, ecurl_kind kind, int curl_code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
const char *ecurl_kind_name(ecurl_kind kind);
/* "1.0", "1.1", "2", "3" for a CURLINFO_HTTP_VERSION value; NULL when unknown. */
const char *ecurl_http_version_name(long v);
/*
 * The one loopback rule (the same as endaoment.partner.net.is_loopback_host):
 * "localhost", "[::1]", or 127.a.b.c in dotted decimal, each part 0-255
 * without leading zeros. h is the host as libcurl's URL parser gives it.
 */
int ecurl_is_loopback_host(const char *h);
/* Header-value rule shared with the user_agent option: no CTL except TAB. */
int ecurl_valid_field_value(const char *v, size_t len);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
