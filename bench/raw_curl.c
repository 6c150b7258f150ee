/*
 * bench/raw_curl.c: the practical limit for a sequential client.
 *
 * Posts the same bytes the SDK posts (the body file and the same request
 * headers) to URL, one request at a time, on ONE libcurl easy handle whose
 * options are set once, so the connection is kept alive and nothing is
 * rebuilt per request. The response body is collected into a buffer and the
 * status is checked, but not decoded.
 *
 * With MODE "fresh": what any binding must do per request on libcurl before
 * 8.1.0, where an easy handle must not carry a second transfer (curl issue
 * 11101): a new easy handle with its options, the URL parsed into a CURLU
 * (scheme and host read back, as a binding that checks them must), the
 * header list built, the transfer driven on one multi handle that keeps the
 * connection, then all of it freed. The same options as csrc/curl_transfer.c.
 *
 * usage: raw_curl URL BODY_FILE API_KEY USER_AGENT SECONDS MAX_REQUESTS WARMUP [fresh]
 * prints: requests=N seconds=S rate=R
 *
 * Built by bench/run.sh: gcc -O2 raw_curl.c $(pkg-config --cflags --libs libcurl)
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    buf_t *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;
        while (cap < b->len + n)
            cap *= 2;
        p = realloc(b->data, cap);
        if (!p)
            return 0;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    return n;
}

typedef struct {
    CURLM *multi;
    const char *url, *ua_header, *key_header, *body;
    size_t body_len;
    buf_t *resp;
} fresh_t;

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

/* One request the way a binding on libcurl < 8.1.0 must make it; 0 on success. */
static int one_fresh(const fresh_t *f)
{
    struct curl_slist *headers = NULL;
    char *scheme = NULL, *host = NULL, errbuf[CURL_ERROR_SIZE];
    CURLcode result = CURLE_OK;
    int running = 1, done = 0, rc = -1;
    long status = 0;
    CURLU *u = curl_url();
    CURL *easy = curl_easy_init();

    if (!u || !easy || curl_url_set(u, CURLUPART_URL, f->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto out;
    headers = curl_slist_append(headers, "Accept: application/json");
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, f->key_header);
    headers = curl_slist_append(headers, f->ua_header);
    headers = curl_slist_append(headers, "Expect:");
    if (!headers)
        goto out;
    f->resp->len = 0;
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *)f);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CURLU, u);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(easy, CURLOPT_MAXAGE_CONN, 50L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)8388608);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, (void *)f->resp);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, (void *)f);
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)f->body_len);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, f->body);
    if (curl_multi_add_handle(f->multi, easy) != CURLM_OK)
        goto out;
    while (!done) {
        CURLMsg *msg;
        int left;
        if (curl_multi_perform(f->multi, &running) != CURLM_OK)
            break;
        while ((msg = curl_multi_info_read(f->multi, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy) {
                result = msg->data.result;
                done = 1;
            }
        }
        if (!done && curl_multi_poll(f->multi, NULL, 0, 1000, NULL) != CURLM_OK)
            break;
    }
    curl_multi_remove_handle(f->multi, easy);
    if (!done || result != CURLE_OK) {
        fprintf(stderr, "raw_curl: %s\n", done ? curl_easy_strerror(result) : "multi failed");
        goto out;
    }
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        fprintf(stderr, "raw_curl: HTTP %ld\n", status);
        goto out;
    }
    rc = 0;
out:
    /* The handle first, while what it points at is alive: no reset needed. */
    if (easy)
        curl_easy_cleanup(easy);
    curl_slist_free_all(headers);
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

static int one(CURL *easy, buf_t *resp)
{
    long status = 0;
    CURLcode rc;
    resp->len = 0;
    rc = curl_easy_perform(easy);
    if (rc != CURLE_OK) {
        fprintf(stderr, "raw_curl: %s\n", curl_easy_strerror(rc));
        return -1;
    }
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        fprintf(stderr, "raw_curl: HTTP %ld\n", status);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *url, *body_file, *api_key, *user_agent;
    double seconds, t0, t1;
    long max_requests, warmup, i, n = 0;
    char *body, key_header[512], ua_header[512];
    size_t body_len = 0;
    struct curl_slist *headers = NULL;
    buf_t resp = {NULL, 0, 0};
    CURL *easy;
    fresh_t fresh;
    int is_fresh;

    if (argc != 8 && !(argc == 9 && strcmp(argv[8], "fresh") == 0)) {
        fprintf(stderr, "usage: raw_curl URL BODY_FILE API_KEY USER_AGENT SECONDS MAX_REQUESTS WARMUP [fresh]\n");
        return 2;
    }
    is_fresh = argc == 9;
    url = argv[1];
    body_file = argv[2];
    api_key = argv[3];
    user_agent = argv[4];
    seconds = atof(argv[5]);
    max_requests = atol(argv[6]);
    warmup = atol(argv[7]);

    body = read_file(body_file, &body_len);
    if (!body) {
        fprintf(stderr, "raw_curl: cannot read %s\n", body_file);
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    easy = curl_easy_init();
    if (!easy)
        return 1;

    /* The header set the SDK sends (bench/README.md). */
    snprintf(key_header, sizeof key_header, "x-api-key: %s", api_key);
    headers = curl_slist_append(headers, "Accept: application/json");
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, key_header);
    headers = curl_slist_append(headers, "Expect:");
    if (!headers)
        return 1;

    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_USERAGENT, user_agent);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, (void *)&resp);

    fresh.multi = is_fresh ? curl_multi_init() : NULL;
    fresh.url = url;
    snprintf(ua_header, sizeof ua_header, "User-Agent: %s", user_agent);
    fresh.ua_header = ua_header;
    fresh.key_header = key_header;
    fresh.body = body;
    fresh.body_len = body_len;
    fresh.resp = &resp;
    if (is_fresh && !fresh.multi)
        return 1;

    for (i = 0; i < warmup; i++)
        if ((is_fresh ? one_fresh(&fresh) : one(easy, &resp)) != 0)
            return 1;

    t0 = now_s();
    t1 = t0;
    while (n < max_requests && t1 - t0 < seconds) {
        if ((is_fresh ? one_fresh(&fresh) : one(easy, &resp)) != 0)
            return 1;
        n++;
        t1 = now_s();
    }
    printf("requests=%ld seconds=%.6f rate=%.1f\n", n, t1 - t0, (double)n / (t1 - t0));

    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    if (fresh.multi)
        curl_multi_cleanup(fresh.multi);
    curl_global_cleanup();
    free(body);
    free(resp.data);
    return 0;
}
