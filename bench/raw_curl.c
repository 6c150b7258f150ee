/*
 * bench/raw_curl.c: the practical limit for a sequential client.
 *
 * Posts the same bytes the SDK posts (the body file and the same request
 * headers) to URL, one request at a time, on ONE libcurl easy handle whose
 * options are set once, so the connection is kept alive and nothing is
 * rebuilt per request. The response body is collected into a buffer and the
 * status is checked, but not decoded.
 *
 * usage: raw_curl URL BODY_FILE API_KEY USER_AGENT SECONDS MAX_REQUESTS WARMUP
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
    char *body, key_header[512];
    size_t body_len = 0;
    struct curl_slist *headers = NULL;
    buf_t resp = {NULL, 0, 0};
    CURL *easy;

    if (argc != 8) {
        fprintf(stderr, "usage: raw_curl URL BODY_FILE API_KEY USER_AGENT SECONDS MAX_REQUESTS WARMUP\n");
        return 2;
    }
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

    for (i = 0; i < warmup; i++)
        if (one(easy, &resp) != 0)
            return 1;

    t0 = now_s();
    t1 = t0;
    while (n < max_requests && t1 - t0 < seconds) {
        if (one(easy, &resp) != 0)
            return 1;
        n++;
        t1 = now_s();
    }
    printf("requests=%ld seconds=%.6f rate=%.1f\n", n, t1 - t0, (double)n / (t1 - t0));

    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    curl_global_cleanup();
    free(body);
    free(resp.data);
    return 0;
}
