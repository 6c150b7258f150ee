/*
 * One HTTP exchange on a libcurl easy handle, with no Lua in it.
 *
 * The state of a transfer (URL, request headers, request body, response
 * buffers, limits, error buffer) lives in one struct so that the synchronous
 * transport (curl.c, curl_easy_perform) and a future multi-driven transport
 * (curl_multi_add_handle + CURLMSG_DONE) can share the same code:
 *
 *   ecurl_transfer_begin()       parse and check the URL, copy the body
 *   ecurl_transfer_add_header()  once per caller header (validated)
 *   ecurl_transfer_setup()       reset the easy handle and apply every option
 *   ... curl_easy_perform(), or a multi handle runs it ...
 *   ecurl_transfer_complete()    collect the CURLcode, status, timing
 *   ecurl_transfer_error() / ecurl_transfer_next_header() / tr->body
 *   ecurl_transfer_release()     free everything (idempotent)
 *
 * The libcurl callbacks only append to the C buffers below; nothing calls
 * into Lua until the transfer is complete.
 */
#ifndef EPARTNER_CURL_TRANSFER_H
#define EPARTNER_CURL_TRANSFER_H

#include <stddef.h>
#include <curl/curl.h>

#include "strbuf.h"

#if !defined(LIBCURL_VERSION_NUM) || LIBCURL_VERSION_NUM < 0x074100
#error "endaoment.partner.curl needs libcurl 7.65.0 or newer (CURLU, CURLOPT_MAXAGE_CONN)"
#endif

/* Total bytes of response header lines (all responses of one exchange). */
#define ECURL_MAX_HEADER_BYTES (64 * 1024)
/* Idle keep-alive connections older than this are not reused (seconds). */
#define ECURL_MAXAGE_CONN 30L
#define ECURL_HOST_MAX 256
#define ECURL_MESSAGE_MAX (CURL_ERROR_SIZE + 512)

typedef enum {
    ECURL_KIND_NONE = 0,
    ECURL_KIND_CONFIG,
    ECURL_KIND_NETWORK,
    ECURL_KIND_TIMEOUT,
    ECURL_KIND_TLS,
    ECURL_KIND_TOO_LARGE,
    ECURL_KIND_OOM
} ecurl_kind;

typedef struct {
    ecurl_kind kind;
    int retryable;
    int curl_code; /* -1: found before libcurl ran */
    char message[ECURL_MESSAGE_MAX];
} ecurl_error;

/* What belongs to the transport rather than to one request. */
typedef struct {
    const char *ca_file;    /* NULL: libcurl's compiled-in default */
    const char *user_agent; /* NULL: send none */
    size_t max_body;
    int allow_http_loopback;
    CURLSH *share; /* NULL allowed */
} ecurl_config;

typedef struct {
    const char *method;
    const char *url;
    const char *body; /* NULL: no body */
    size_t body_len;
    long timeout_ms;
    long connect_timeout_ms;
} ecurl_request;

/* Why a callback stopped the transfer (libcurl then reports CURLE_WRITE_ERROR). */
enum { ECURL_STOP_NONE = 0, ECURL_STOP_BODY, ECURL_STOP_HEADERS, ECURL_STOP_OOM };

typedef struct ecurl_transfer {
    CURL *easy; /* borrowed while set up; the owner cleans it up */
    CURLU *url;
    struct curl_slist *headers;
    strbuf_t req_body;
    strbuf_t body;
    strbuf_t head; /* "name:value\n" lines of the latest response only */
    size_t head_seen;
    size_t max_body;
    int stop;
    int has_body;
    int loopback_http;
    int gave_accept;
    int gave_expect;
    int gave_user_agent;
    int gave_content_type;
    char method[32];
    char host[ECURL_HOST_MAX];
    char errbuf[CURL_ERROR_SIZE];
    double started_ms;
    /* results, valid after ecurl_transfer_complete() */
    CURLcode code;
    long status;
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
/* Idempotent. Only after every easy handle using the share is cleaned up. */
void ecurl_config_release(ecurl_config *cfg);

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
 * Takes the easy handle back from a finished (or abandoned) transfer: it is
 * reset and forgotten, ready for another transfer; the response buffers and
 * results stay in tr until ecurl_transfer_release(). NULL if none was set.
 * A multi owner calls curl_multi_remove_handle() first.
 */
CURL *ecurl_transfer_detach(ecurl_transfer *tr);

void ecurl_error_set(ecurl_error *err, ecurl_kind kind, int retryable, int curl_code,
                     const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
const char *ecurl_kind_name(ecurl_kind kind);
/* Header-value rule shared with the user_agent option: no CTL except TAB. */
int ecurl_valid_field_value(const char *v, size_t len);

/*
 * Lua glue shared by curl.c (the blocking transport) and curl_multi.c (the
 * multi handle). Declared only where lua.h was included first, so that
 * curl_transfer.c stays free of Lua.
 */
#ifdef LUA_VERSION_NUM

#define ECURL_DEFAULT_MAX_BODY 8388608

/* Options of curl.new and curl.multi; the strings live on the Lua stack (indexes 2-5). */
typedef struct {
    const char *ca_file; /* the system bundle when not given and readable */
    size_t ca_len;
    const char *user_agent;
    size_t ua_len;
    size_t max_body;
    int allow_http_loopback;
} ecurl_lua_options;

void ecurl_lua_setfuncs(lua_State *L, const luaL_Reg *r);
/* Pushes nil and { kind, message, curl_code?, retryable, elapsed_ms? }; returns 2. */
int ecurl_lua_push_error(lua_State *L, const ecurl_error *e, double elapsed_ms);
/* Pushes { status, headers, body, reused, elapsed_ms }. */
void ecurl_lua_push_response(lua_State *L, ecurl_transfer *tr);
/* Reads the options table at index 1 (settop 1, then fields at 2-5); raises on a bad option. */
void ecurl_lua_read_options(lua_State *L, const char *fname, ecurl_lua_options *o);
/*
 * Pushes the request table's fields (at idx) above *base and checks them;
 * nothing is allocated, and only a raising __index can raise. The strings in
 * req point into the stack: keep it until the transfer has begun.
 */
int ecurl_lua_read_request(lua_State *L, int idx, ecurl_request *req, int *base, ecurl_error *err);
/* ecurl_transfer_begin() plus every header of the request table; never raises. */
int ecurl_lua_begin_request(lua_State *L, int base, ecurl_transfer *tr, const ecurl_config *cfg,
                            const ecurl_request *req, ecurl_error *err);
/* Adds curl.multi to the module table on the top of the stack (curl_multi.c). */
void ecurl_multi_register(lua_State *L);

#endif /* LUA_VERSION_NUM */

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
