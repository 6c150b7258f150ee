/*
 * libFuzzer harness "curl": the transfer layer of endaoment.partner.curl
 * (csrc/curl_transfer.h) against responses built from the fuzzer's bytes.
 *
 * The layer's libcurl callbacks (response headers, body) are static in
 * curl_transfer.c, so they are not called directly: the harness drives the
 * public functions only (ecurl_config_init, ecurl_transfer_begin, _add_header,
 * _setup, curl_easy_perform, _complete, _error, _next_header, _release), and
 * plays the server over a loopback socket: after ecurl_transfer_setup it
 * adds CURLOPT_ABSTRACT_UNIX_SOCKET, so libcurl connects (for real) to this
 * process's listening AF_UNIX socket while the URL stays http://127.0.0.1:9/;
 * a thread accepts, writes the response and reads the request until libcurl
 * hangs up. libcurl itself splits the bytes into header lines and body data
 * and feeds them to the layer's own callbacks, exactly as from a TCP server,
 * with no port, no DNS and no TIME_WAIT.
 *
 * Input, byte 1 (mode):
 *   0    raw: the rest of the input is the whole response stream;
 *   1    raw pair: two responses, two exchanges in a row on one easy handle;
 *   2    URL: the rest is a URL for ecurl_transfer_begin (no transfer);
 *   3-7  structured: a well-formed response (interim 1xx, status, header
 *        fields, padding up to the 64 KiB header cap, a body framed by
 *        Content-Length, chunked or connection close) from the next bytes,
 *        with request headers added through ecurl_transfer_add_header.
 *
 * Properties (a failure aborts):
 *   * raw: whatever arrives, every field ecurl_transfer_next_header returns has
 *     a non-empty lowercase name without ':' and a value without CR, LF or
 *     surrounding whitespace; the body never exceeds max_body; the header
 *     bytes seen never exceed ECURL_MAX_HEADER_BYTES; errors have a kind and
 *     a message;
 *   * structured: the transfer succeeds exactly when the header bytes are at
 *     most 64 KiB and the body at most max_body (else a "too_large" error
 *     naming headers or body); on success the status, the body and the final
 *     response's fields (in order, names lowercased, values trimmed) are
 *     exactly what was sent;
 *   * URL: begin accepts https, accepts http exactly for loopback hosts
 *     (localhost, 127.0.0.0/8, [::1]) written in their canonical form, and
 *     refuses anything libcurl cannot parse;
 *   * add_header accepts exactly RFC 9110 tokens with values free of control
 *     bytes other than TAB, and never Content-Length, Transfer-Encoding, Host
 *     or Connection (the transport frames the request).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "curl_transfer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "PROPERTY (%s:%d): %s: ", __FILE__, __LINE__, #cond);                 \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/*
 * Each input gets new easy handles, so that an input replays alone exactly
 * as it ran (no state from earlier inputs). Reuse is what the transports do,
 * though: the "raw pair" mode runs two exchanges on one handle.
 *
 * libcurl before 8.1.0 keeps a pointer to the last response header of a
 * transfer across curl_easy_reset (curl issue #11101, fixed by #11103): on a
 * reused handle, a next response that starts with a folded header line makes
 * libcurl read and free freed memory. If the transfer layer offers
 * ecurl_easy_reuse_safe() (0: do not reuse handles with this libcurl), the
 * pair mode follows the same policy as the transports would.
 */
extern int ecurl_easy_reuse_safe(void) __attribute__((weak));

static ecurl_config configs[6];
static ecurl_config config_no_loopback; /* allow_http_loopback = 0 */
static const size_t max_bodies[6] = {1, 7, 64, 1000, 4096, 8388608};

static CURL *easy_new(void)
{
    CURL *e = curl_easy_init();
    if (!e)
        abort();
    return e;
}

/* The handle for a second transfer after `e`: e itself, unless reuse is unsafe. */
static CURL *easy_again(CURL *e)
{
    if (ecurl_easy_reuse_safe && !ecurl_easy_reuse_safe()) {
        curl_easy_cleanup(e);
        return easy_new();
    }
    return e;
}

/* ---- input reader ---- */

typedef struct {
    const uint8_t *p;
    size_t n, i;
} rd_t;

static unsigned rd_byte(rd_t *r)
{
    return r->i < r->n ? r->p[r->i++] : 0;
}

static size_t rd_left(const rd_t *r)
{
    return r->n - r->i;
}

/* ---- a growable response buffer (plain malloc; the harness's own) ---- */

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = (char *)realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(buf_t *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* ---- the loopback "server" ---- */

static int listener = -1;
static char listen_name[64]; /* an abstract AF_UNIX address: no file, no port */

typedef struct {
    const char *data;
    size_t len;
} writer_t;

/* Accepts the one connection of a transfer, answers it, reads until libcurl hangs up. */
static void *writer_main(void *arg)
{
    writer_t *w = (writer_t *)arg;
    struct pollfd pfd;
    size_t off = 0;
    char sink[4096];
    int fd;

    pfd.fd = listener;
    pfd.events = POLLIN;
    if (poll(&pfd, 1, 5000) != 1)
        return NULL; /* libcurl never connected (the caller's checks say why) */
    fd = accept(listener, NULL, NULL);
    if (fd < 0)
        return NULL;
    while (off < w->len) {
        ssize_t k = send(fd, w->data + off, w->len - off, MSG_NOSIGNAL);
        if (k <= 0)
            break; /* the client stopped reading and closed: fine */
        off += (size_t)k;
    }
    shutdown(fd, SHUT_WR);
    /* the request, until libcurl closes (FORBID_REUSE): closing first could reset the connection */
    pfd.fd = fd;
    pfd.events = POLLIN;
    while (poll(&pfd, 1, 10000) == 1 && recv(fd, sink, sizeof sink, 0) > 0)
        ;
    close(fd);
    return NULL;
}

typedef struct {
    int ok; /* 0: no response; 1: a response (tr has it) */
    ecurl_error err;
} outcome_t;

/*
 * Runs one GET through the transfer layer against `resp`; tr is left
 * complete (not released) so the caller can inspect it.
 */
static void exchange(CURL *easy, ecurl_transfer *tr, const ecurl_config *cfg, const ecurl_request *req,
                     const char *resp, size_t resp_len, outcome_t *out)
{
    pthread_t th;
    writer_t w;
    CURLcode code;

    memset(out, 0, sizeof *out);
    if (ecurl_transfer_setup(tr, easy, cfg, req, &out->err) != 0) {
        CHECK(0, "ecurl_transfer_setup failed: %s", out->err.message);
    }
    /* Harness plumbing on top of the layer's own options: the "server" is our listener. */
    curl_easy_setopt(easy, CURLOPT_ABSTRACT_UNIX_SOCKET, listen_name);
    curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L);
    if (getenv("FUZZ_CURL_VERBOSE"))
        curl_easy_setopt(easy, CURLOPT_VERBOSE, 1L);

    w.data = resp;
    w.len = resp_len;
    if (pthread_create(&th, NULL, writer_main, &w) != 0)
        abort();
    code = curl_easy_perform(easy);
    ecurl_transfer_complete(tr, code);
    pthread_join(th, NULL);
    out->ok = !ecurl_transfer_error(tr, cfg, &out->err);
}

static void listen_once(void)
{
    struct sockaddr_un sa;
    socklen_t len;

    listener = socket(AF_UNIX, SOCK_STREAM, 0);
    if (listener < 0) {
        perror("socket");
        abort();
    }
    snprintf(listen_name, sizeof listen_name, "endaoment-fuzz-curl-%ld", (long)getpid());
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    /* abstract namespace: a leading NUL, then the name (not NUL-terminated) */
    memcpy(sa.sun_path + 1, listen_name, strlen(listen_name));
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(listen_name));
    if (bind(listener, (struct sockaddr *)&sa, len) != 0 || listen(listener, 16) != 0) {
        perror("bind/listen");
        abort();
    }
}

static int has_upper(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            return 1;
    return 0;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Invariants of any completed transfer. */
static void check_any(ecurl_transfer *tr, const ecurl_config *cfg, const outcome_t *o)
{
    size_t pos = 0, count = 0;
    const char *name, *value;
    size_t nlen, vlen;

    CHECK(tr->head_seen <= ECURL_MAX_HEADER_BYTES, "head_seen %zu", tr->head_seen);
    CHECK(tr->body.len <= cfg->max_body, "body %zu > max_body %zu", tr->body.len, cfg->max_body);
    if (!o->ok) {
        CHECK(o->err.kind != ECURL_KIND_NONE, "an error without a kind");
        CHECK(memchr(o->err.message, '\0', sizeof o->err.message) != NULL, "unterminated error message");
        CHECK(o->err.message[0] != '\0', "an empty error message");
    }
    while (ecurl_transfer_next_header(tr, &pos, &name, &nlen, &value, &vlen)) {
        CHECK(nlen > 0, "an empty header name");
        CHECK(!has_upper(name, nlen), "header name not lowercased: %.*s", (int)nlen, name);
        CHECK(!memchr(name, ':', nlen) && !memchr(name, '\n', nlen), "bad header name %.*s", (int)nlen, name);
        CHECK(!memchr(value, '\n', vlen), "LF in a header value");
        CHECK(vlen == 0 || (!is_ows(value[0]) && !is_ows(value[vlen - 1])), "value not trimmed: [%.*s]",
              (int)vlen, value);
        CHECK(name >= tr->head.data && value + vlen <= tr->head.data + tr->head.len, "field outside the buffer");
        CHECK(++count <= tr->head.len, "more fields than bytes");
    }
    CHECK(pos <= tr->head.len, "next_header ran past the buffer");
}

/* ---- structured responses ---- */

static const char *const field_names[] = {
    "Content-Type", "X-Request-Id", "Retry-After", "Idempotency-Key", "ETag", "Date", "Server",
    "Cache-Control", "Vary", "X-RateLimit-Remaining", "x-endaoment-user-id", "Idempotent-Replayed",
    "Location", "WWW-Authenticate", "Set-Cookie", "X-Empty", "A", "x-",
};

static int ascii_ieq(const char *a, size_t n, const char *b)
{
    size_t i;
    if (strlen(b) != n)
        return 0;
    for (i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (char)(y + 32);
        if (x != y)
            return 0;
    }
    return 1;
}

/* Names that change how libcurl frames or handles the response: the harness sets them itself. */
static int reserved_name(const char *s, size_t n)
{
    static const char *const r[] = {"content-length", "transfer-encoding", "connection", "content-encoding",
                                    "keep-alive", "proxy-connection", "upgrade", "trailer", "te",
                                    "content-range", "alt-svc", "strict-transport-security", NULL};
    int i;
    for (i = 0; r[i]; i++)
        if (ascii_ieq(s, n, r[i]))
            return 1;
    return 0;
}

static int is_tchar(unsigned c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", (int)c) != NULL);
}

typedef struct {
    char name[48];
    size_t nlen;
    char value[300];
    size_t vlen;
} field_t;

#define MAX_FIELDS 24

/* One field (name, value) from the input; 0 if the input has no room for one. */
static void make_field(rd_t *r, field_t *f)
{
    unsigned sel = rd_byte(r), i, vl;
    const char *lead_ws[] = {"", " ", "  ", "\t", " \t"};

    f->nlen = 0;
    if (sel < 200) {
        const char *n = field_names[sel % (sizeof field_names / sizeof field_names[0])];
        f->nlen = strlen(n);
        memcpy(f->name, n, f->nlen);
    } else {
        unsigned len = rd_byte(r) % 20 + 1;
        for (i = 0; i < len; i++) {
            unsigned c = rd_byte(r);
            f->name[f->nlen++] = is_tchar(c) ? (char)c : (char)('a' + c % 26);
        }
    }
    if (reserved_name(f->name, f->nlen) || (f->nlen >= 5 && memcmp(f->name, "HTTP/", 5) == 0)) {
        memcpy(f->name, "x-renamed", 9);
        f->nlen = 9;
    }
    /* value: optional surrounding whitespace (trimmed by the parser), then bytes without CR, LF, NUL */
    f->vlen = 0;
    {
        const char *ws = lead_ws[rd_byte(r) % 5];
        memcpy(f->value, ws, strlen(ws));
        f->vlen = strlen(ws);
    }
    vl = rd_byte(r) % 64;
    for (i = 0; i < vl && rd_left(r) > 0; i++) {
        unsigned c = rd_byte(r);
        if (c == '\r' || c == '\n' || c == 0)
            c = ' ';
        f->value[f->vlen++] = (char)c;
    }
    if (rd_byte(r) % 4 == 0) {
        f->value[f->vlen++] = ' ';
        f->value[f->vlen++] = '\t';
    }
}

static void trimmed(const field_t *f, size_t *off, size_t *len)
{
    size_t a = 0, b = f->vlen;
    while (a < b && is_ows(f->value[a]))
        a++;
    while (b > a && is_ows(f->value[b - 1]))
        b--;
    *off = a;
    *len = b - a;
}

static void lower_copy(char *dst, const char *src, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        dst[i] = (src[i] >= 'A' && src[i] <= 'Z') ? (char)(src[i] + 32) : src[i];
}

static void add_line(buf_t *resp, size_t *head_bytes, const char *s, size_t n)
{
    buf_add(resp, s, n);
    buf_add(resp, "\r\n", 2);
    *head_bytes += n + 2;
}

static void add_field_line(buf_t *resp, size_t *head_bytes, const field_t *f)
{
    char line[400];
    size_t n = 0;
    memcpy(line, f->name, f->nlen);
    n = f->nlen;
    line[n++] = ':';
    memcpy(line + n, f->value, f->vlen);
    n += f->vlen;
    add_line(resp, head_bytes, line, n);
}

static const int statuses[] = {200, 201, 202, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 299, 599};

static void request_headers(rd_t *r, ecurl_transfer *tr)
{
    unsigned k, count = rd_byte(r) % 3;

    for (k = 0; k < count; k++) {
        char name[24], value[40];
        size_t nlen = rd_byte(r) % sizeof name, vlen = rd_byte(r) % sizeof value, i;
        int want, got;
        ecurl_error err;
        static const char *const fixed[] = {"Content-Length", "transfer-encoding", "Accept", "X-Api-Key",
                                            "Host", "CONNECTION", "Expect", "User-Agent"};
        unsigned sel = rd_byte(r);

        if (sel >= 0xF0) {
            const char *f = fixed[sel % 8];
            nlen = strlen(f);
            memcpy(name, f, nlen);
        } else {
            for (i = 0; i < nlen; i++)
                name[i] = (char)rd_byte(r);
        }
        want = nlen > 0;
        for (i = 0; i < nlen; i++)
            if (!is_tchar((unsigned char)name[i]))
                want = 0;
        for (i = 0; i < vlen; i++) {
            unsigned char c = (unsigned char)(value[i] = (char)rd_byte(r));
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                want = 0;
        }
        /* the transport frames the request: endaoment.partner.net.RESERVED_HEADERS */
        if (ascii_ieq(name, nlen, "content-length") || ascii_ieq(name, nlen, "transfer-encoding") ||
            ascii_ieq(name, nlen, "host") || ascii_ieq(name, nlen, "connection"))
            want = 0;
        got = ecurl_transfer_add_header(tr, name, nlen, value, vlen, &err) == 0;
        CHECK(got == want, "add_header accepted=%d, expected %d (name %.*s)", got, want, (int)nlen, name);
        if (!got) {
            CHECK(err.kind == ECURL_KIND_CONFIG, "add_header refusal of kind %d", (int)err.kind);
            CHECK(err.message[0] != '\0', "add_header refusal without a message");
        }
    }
}

static void structured(rd_t *r)
{
    unsigned sel = rd_byte(r);
    const ecurl_config *cfg = &configs[sel % 6];
    size_t max_body = cfg->max_body;
    int status = statuses[rd_byte(r) % (sizeof statuses / sizeof statuses[0])];
    unsigned framing = rd_byte(r) % 3, interim = rd_byte(r) % 4, pad = rd_byte(r);
    field_t fields[MAX_FIELDS];
    size_t nfields = 0, head_bytes = 0, body_len, i;
    unsigned body_sel = rd_byte(r);
    char line[512];
    buf_t resp = {NULL, 0, 0}, body = {NULL, 0, 0};
    ecurl_transfer tr;
    ecurl_request req;
    ecurl_error err;
    outcome_t o;
    CURL *easy;
    int head_ok, body_ok;

    /* body: around max_body (the boundary), or a length from the input */
    if (body_sel < 128 && max_body <= 100000) {
        long len = (long)max_body + (long)(body_sel % 5) - 2;
        body_len = len < 0 ? 0 : (size_t)len;
    } else {
        body_len = (size_t)(rd_byte(r) | (rd_byte(r) << 8)) % 20000;
    }
    for (i = 0; i < body_len; i++) {
        char c = (char)(r->n ? r->p[(r->i + i) % r->n] : 'b');
        buf_add(&body, &c, 1);
    }
    if (body_len == 0)
        buf_add(&body, "", 0);

    if (interim) {
        const char *st = interim == 3 ? "HTTP/1.1 103 Early Hints" : "HTTP/1.1 100 Continue";
        add_line(&resp, &head_bytes, st, strlen(st));
        if (interim == 3)
            add_line(&resp, &head_bytes, "Link: </style.css>; rel=preload", 31);
        add_line(&resp, &head_bytes, "", 0);
    }
    snprintf(line, sizeof line, "HTTP/1.1 %d Fuzzed", status);
    add_line(&resp, &head_bytes, line, strlen(line));

    while (nfields < MAX_FIELDS - 3 && rd_left(r) > 4 && rd_byte(r) % 8 != 0)
        make_field(r, &fields[nfields++]);
    /* framing fields come last, as they are also expected back */
    {
        field_t *f = &fields[nfields++];
        if (framing == 0)
            snprintf(f->value, sizeof f->value, " %zu", body_len);
        else if (framing == 1)
            snprintf(f->value, sizeof f->value, " chunked");
        else
            snprintf(f->value, sizeof f->value, " close");
        memcpy(f->name, framing == 0 ? "Content-Length" : framing == 1 ? "Transfer-Encoding" : "Connection",
               framing == 0 ? 14 : framing == 1 ? 17 : 10);
        f->nlen = framing == 0 ? 14 : framing == 1 ? 17 : 10;
        f->vlen = strlen(f->value);
    }
    for (i = 0; i < nfields; i++)
        add_field_line(&resp, &head_bytes, &fields[i]);

    /* padding: up to, exactly at, or just past the 64 KiB header cap ("x-p:vvv..." lines) */
    if (pad >= 0xC0) {
        long target = ECURL_MAX_HEADER_BYTES + (long)(pad % 9) - 4 - 2; /* minus the final blank line */
        while ((long)head_bytes < target) {
            long room = target - (long)head_bytes - 2; /* minus this line's CRLF */
            char padline[300];
            size_t n = room > 250 ? (room - 250 < 6 ? 200 : 250) : (size_t)(room < 4 ? 4 : room);
            memcpy(padline, "x-p:", 4);
            memset(padline + 4, 'v', n - 4);
            add_line(&resp, &head_bytes, padline, n);
        }
    }
    add_line(&resp, &head_bytes, "", 0);

    /* the body, framed */
    if (framing == 1) {
        size_t off = 0;
        while (off < body_len) {
            size_t chunk = (size_t)(rd_byte(r) % 200) + 1;
            char hdr[32];
            if (chunk > body_len - off)
                chunk = body_len - off;
            snprintf(hdr, sizeof hdr, "%zx\r\n", chunk);
            buf_str(&resp, hdr);
            buf_add(&resp, body.p + off, chunk);
            buf_str(&resp, "\r\n");
            off += chunk;
        }
        buf_str(&resp, "0\r\n\r\n");
    } else {
        buf_add(&resp, body.p, body_len);
    }

    ecurl_transfer_init(&tr);
    memset(&req, 0, sizeof req);
    req.method = "GET";
    req.url = "http://127.0.0.1:9/v1/fuzz";
    req.timeout_ms = 10000;
    req.connect_timeout_ms = 5000;
    CHECK(ecurl_transfer_begin(&tr, cfg, &req, &err) == 0, "begin failed: %s", err.message);
    request_headers(r, &tr);
    easy = easy_new();
    exchange(easy, &tr, cfg, &req, resp.p, resp.len, &o);
    check_any(&tr, cfg, &o);

    head_ok = head_bytes <= ECURL_MAX_HEADER_BYTES;
    body_ok = body_len <= max_body;
    if (head_ok && body_ok) {
        size_t pos = 0, k = 0;
        const char *name, *value;
        size_t nlen, vlen;
        CHECK(o.ok, "a well-formed response failed (head %zu, body %zu, max_body %zu): %s", head_bytes, body_len,
              max_body, o.err.message);
        CHECK(tr.status == status, "status %ld, sent %d", tr.status, status);
        CHECK(tr.body.len == body_len && (body_len == 0 || memcmp(tr.body.data, body.p, body_len) == 0),
              "body differs (%zu bytes, sent %zu)", tr.body.len, body_len);
        while (ecurl_transfer_next_header(&tr, &pos, &name, &nlen, &value, &vlen)) {
            char lname[48];
            size_t off, len;
            if (k >= nfields) {
                /* the padding lines */
                CHECK(nlen == 3 && memcmp(name, "x-p", 3) == 0 && (vlen == 0 || value[0] == 'v'),
                      "an extra field %.*s", (int)nlen, name);
                continue;
            }
            lower_copy(lname, fields[k].name, fields[k].nlen);
            trimmed(&fields[k], &off, &len);
            CHECK(nlen == fields[k].nlen && memcmp(name, lname, nlen) == 0, "field %zu: name %.*s, sent %.*s", k,
                  (int)nlen, name, (int)fields[k].nlen, fields[k].name);
            CHECK(vlen == len && memcmp(value, fields[k].value + off, len) == 0,
                  "field %zu (%.*s): value [%.*s], sent [%.*s]", k, (int)nlen, name, (int)vlen, value, (int)len,
                  fields[k].value + off);
            k++;
        }
        CHECK(k == nfields, "%zu fields returned, %zu sent", k, nfields);
    } else {
        CHECK(!o.ok, "an oversized response was accepted (head %zu, body %zu, max_body %zu)", head_bytes, body_len,
              max_body);
        CHECK(o.err.kind == ECURL_KIND_TOO_LARGE, "oversized response gave kind %s: %s",
              ecurl_kind_name(o.err.kind), o.err.message);
        CHECK(!o.err.retryable, "a too_large error marked retryable");
        /* both over: whichever limit the stream reaches first (libcurl checks Content-Length on sight) */
        if (!head_ok && body_ok)
            CHECK(strstr(o.err.message, "headers") != NULL, "header cap error does not say so: %s", o.err.message);
        else if (head_ok)
            CHECK(strstr(o.err.message, "body") != NULL, "body cap error does not say so: %s", o.err.message);
        else
            CHECK(strstr(o.err.message, "headers") != NULL || strstr(o.err.message, "body") != NULL,
                  "cap error names neither headers nor body: %s", o.err.message);
    }
    ecurl_transfer_release(&tr);
    curl_easy_cleanup(easy);
    free(resp.p);
    free(body.p);
}

/* ---- raw responses ---- */

static void raw_one(CURL *easy, const ecurl_config *cfg, const uint8_t *p, size_t n, unsigned crlf)
{
    ecurl_transfer tr;
    ecurl_request req;
    ecurl_error err;
    outcome_t o;
    buf_t resp = {NULL, 0, 0};
    size_t i;

    /* optionally turn bare LF into CRLF, so short inputs reach the header parser */
    for (i = 0; i < n; i++) {
        if (crlf && p[i] == '\n')
            buf_add(&resp, "\r", 1);
        buf_add(&resp, &p[i], 1);
    }
    ecurl_transfer_init(&tr);
    memset(&req, 0, sizeof req);
    req.method = "GET";
    req.url = "http://127.0.0.1:9/v1/fuzz";
    req.timeout_ms = 10000;
    req.connect_timeout_ms = 5000;
    CHECK(ecurl_transfer_begin(&tr, cfg, &req, &err) == 0, "begin failed: %s", err.message);
    exchange(easy, &tr, cfg, &req, resp.p ? resp.p : "", resp.len, &o);
    check_any(&tr, cfg, &o);
    if (o.ok)
        CHECK(tr.status >= 0 && tr.status <= 999, "status %ld", tr.status);
    ecurl_transfer_release(&tr);
    free(resp.p);
}

/*
 * While fuzzing (FUZZ_SKIP_KNOWN set by scripts/fuzz.sh run and smoke), a
 * second response that would trip the open libcurl bug above (a folded line
 * right after the status line, on a reused handle, with no reuse policy in
 * the transfer layer yet) is skipped, so the fuzzer keeps looking for new
 * bugs; its regression input still replays without FUZZ_SKIP_KNOWN.
 */
static int skip_known_libcurl_bug(const uint8_t *p, size_t n)
{
    static int skip = -1;
    const uint8_t *nl;

    if (skip < 0)
        skip = getenv("FUZZ_SKIP_KNOWN") != NULL && !ecurl_easy_reuse_safe &&
               curl_version_info(CURLVERSION_NOW)->version_num < 0x080100;
    if (!skip)
        return 0;
    nl = memchr(p, '\n', n);
    return nl && nl + 1 < p + n && (nl[1] == ' ' || nl[1] == '\t');
}

/*
 * mode 0: the rest is one response; mode 1: two exchanges in a row on the
 * same easy handle (as a transport reuses it), the first response's length in
 * the next two bytes.
 */
static void raw(rd_t *r, int pair)
{
    const ecurl_config *cfg = &configs[rd_byte(r) % 6];
    unsigned crlf = rd_byte(r) & 1;
    CURL *easy = easy_new();

    if (pair) {
        size_t n1 = (size_t)(rd_byte(r) | (rd_byte(r) << 8));
        if (n1 > rd_left(r))
            n1 = rd_left(r);
        if (skip_known_libcurl_bug(r->p + r->i + n1, rd_left(r) - n1)) {
            curl_easy_cleanup(easy);
            return;
        }
        raw_one(easy, cfg, r->p + r->i, n1, crlf);
        r->i += n1;
        easy = easy_again(easy);
    }
    raw_one(easy, cfg, r->p + r->i, rd_left(r), crlf);
    curl_easy_cleanup(easy);
}

/* ---- URLs ---- */

/* An independent reading of "loopback" over libcurl's normalised host. */
static int model_loopback(const char *h)
{
    unsigned a, b, c, d;
    char tail;
    const char *p;
    int dots = 0;

    if (ascii_ieq(h, strlen(h), "localhost") || strcmp(h, "[::1]") == 0)
        return 1;
    for (p = h; *p; p++) {
        if (*p == '.')
            dots++;
        else if (*p < '0' || *p > '9')
            return 0;
        if ((p == h || p[-1] == '.') && *p == '0' && p[1] >= '0' && p[1] <= '9')
            return 0; /* a leading zero */
    }
    if (dots != 3 || sscanf(h, "%3u.%3u.%3u.%3u%c", &a, &b, &c, &d, &tail) != 4)
        return 0;
    return a == 127 && b <= 255 && c <= 255 && d <= 255 && h[strlen(h) - 1] != '.';
}

/*
 * The host as written (after "://" and any user info, before the port, the
 * path, the query or the fragment) equals libcurl's, ASCII case aside: plain
 * http is for the canonical loopback spellings only, not "127.1" or "0x7f.1".
 */
static int written_host_matches(const char *u, const char *host)
{
    const char *a = strstr(u, "://"), *end, *at, *h, *stop;
    size_t n;

    if (!a)
        return 0;
    a += 3;
    end = a + strcspn(a, "/?#");
    h = a;
    for (at = a; at < end; at++)
        if (*at == '@')
            h = at + 1;
    if (*h == '[') {
        stop = memchr(h, ']', (size_t)(end - h));
        if (!stop)
            return 0;
        stop++;
    } else {
        stop = memchr(h, ':', (size_t)(end - h));
        if (!stop)
            stop = end;
    }
    n = (size_t)(stop - h);
    return ascii_ieq(h, n, host);
}

static void url(rd_t *r)
{
    const ecurl_config *cfg = rd_byte(r) & 1 ? &config_no_loopback : &configs[3];
    char u[600];
    size_t n = rd_left(r) < sizeof u - 1 ? rd_left(r) : sizeof u - 1, i;
    ecurl_transfer tr;
    ecurl_request req;
    ecurl_error err;
    CURLU *h;
    char *scheme = NULL, *host = NULL;
    int want, got;

    for (i = 0; i < n; i++)
        u[i] = (char)(r->p[r->i + i] ? r->p[r->i + i] : ' ');
    u[n] = '\0';

    h = curl_url();
    if (!h)
        abort();
    if (curl_url_set(h, CURLUPART_URL, u, 0) == CURLUE_OK && curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        if (strcmp(scheme, "https") == 0)
            want = 1;
        else if (strcmp(scheme, "http") == 0)
            want = model_loopback(host) && written_host_matches(u, host) && cfg->allow_http_loopback;
        else
            want = 0;
    } else {
        want = 0;
    }
    ecurl_transfer_init(&tr);
    memset(&req, 0, sizeof req);
    req.method = "GET";
    req.url = u;
    got = ecurl_transfer_begin(&tr, cfg, &req, &err) == 0;
    CHECK(got == want, "begin(%s) accepted=%d, expected %d (host %s)", u, got, want, host ? host : "-");
    if (!got) {
        CHECK(err.message[0] != '\0', "refusal without a message");
        CHECK(err.kind == ECURL_KIND_CONFIG || err.kind == ECURL_KIND_OOM, "refusal of kind %d", (int)err.kind);
    }
    ecurl_transfer_release(&tr);
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(h);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    size_t i;
    ecurl_error err;

    (void)argc;
    (void)argv;
    for (i = 0; i < 6; i++) {
        if (ecurl_config_init(&configs[i], NULL, 0, "endaoment-fuzz/1", 16, max_bodies[i], 1, 1, &err) != 0) {
            fprintf(stderr, "ecurl_config_init: %s\n", err.message);
            abort();
        }
    }
    if (ecurl_config_init(&config_no_loopback, NULL, 0, NULL, 0, 1000, 0, 1, &err) != 0)
        abort();
    listen_once();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rd_t r;
    unsigned mode;

    r.p = data;
    r.n = size;
    r.i = 0;
    mode = rd_byte(&r) % 8;
    if (mode <= 1)
        raw(&r, mode == 1);
    else if (mode == 2)
        url(&r);
    else
        structured(&r);
    return 0;
}
