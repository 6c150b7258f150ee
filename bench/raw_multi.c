/*
 * bench/raw_multi.c: the practical limit for the async figure.
 *
 * N POSTs of the SDK's bytes (the body file and the same request headers)
 * over CONNS kept-alive connections of one libcurl multi handle: CONNS easy
 * handles with their options set once, each added again as soon as its
 * answer is in, until N have been answered. A warm-up batch opens the
 * connections first, as the SDK's figure does. Statuses are checked; the
 * answers are not decoded.
 *
 * usage: raw_multi URL BODY_FILE API_KEY USER_AGENT N CONNS WARMUP
 * prints: requests=N wall_ms=W
 *
 * Built by bench/run.sh: gcc -O2 raw_multi.c $(pkg-config --cflags --libs libcurl)
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

static double now_ms(void)
{
    return now_s() * 1e3;
}

/* n requests over the handles; 0 on success. */
static int batch(CURLM *multi, CURL **easy, int conns, int n, double limit_ms)
{
    int started = 0, done = 0, running = 0, i;
    double t0 = now_ms();

    for (i = 0; i < conns && started < n; i++, started++)
        curl_multi_add_handle(multi, easy[i]);
    while (done < n) {
        CURLMsg *msg;
        int left;
        if (curl_multi_perform(multi, &running) != CURLM_OK)
            return -1;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            CURL *e = msg->easy_handle;
            long status = 0;
            if (msg->msg != CURLMSG_DONE)
                continue;
            if (msg->data.result != CURLE_OK) {
                fprintf(stderr, "raw_multi: %s\n", curl_easy_strerror(msg->data.result));
                return -1;
            }
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
            if (status < 200 || status >= 300) {
                fprintf(stderr, "raw_multi: HTTP %ld\n", status);
                return -1;
            }
            done++;
            curl_multi_remove_handle(multi, e);
            if (started < n) {
                curl_multi_add_handle(multi, e);
                started++;
            }
        }
        if (done < n && curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK)
            return -1;
        if (now_ms() - t0 > limit_ms) {
            fprintf(stderr, "raw_multi: %d of %d after %.0f ms\n", done, n, limit_ms);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct curl_slist *headers = NULL;
    char key_header[512];
    size_t body_len = 0;
    char *body;
    CURLM *multi;
    CURL **easy;
    int n, conns, warmup, i, rc;
    double t0, wall;

    if (argc != 8) {
        fprintf(stderr, "usage: raw_multi URL BODY_FILE API_KEY USER_AGENT N CONNS WARMUP\n");
        return 2;
    }
    n = atoi(argv[5]);
    conns = atoi(argv[6]);
    warmup = atoi(argv[7]);
    if (n < 1 || conns < 1 || warmup < 0) {
        fprintf(stderr, "raw_multi: N and CONNS must be >= 1, WARMUP >= 0\n");
        return 2;
    }
    body = read_file(argv[2], &body_len);
    if (!body) {
        fprintf(stderr, "raw_multi: cannot read %s\n", argv[2]);
        return 1;
    }
    snprintf(key_header, sizeof key_header, "x-api-key: %s", argv[3]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    headers = curl_slist_append(headers, "Accept: application/json");
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, key_header);
    headers = curl_slist_append(headers, "Expect:");
    multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)conns);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)conns);
    easy = calloc((size_t)conns, sizeof *easy);
    if (!headers || !multi || !easy) {
        fprintf(stderr, "raw_multi: out of memory\n");
        return 1;
    }
    for (i = 0; i < conns; i++) {
        easy[i] = curl_easy_init();
        if (!easy[i])
            return 1;
        curl_easy_setopt(easy[i], CURLOPT_URL, argv[1]);
        curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(easy[i], CURLOPT_PROXY, "");
        curl_easy_setopt(easy[i], CURLOPT_USERAGENT, argv[4]);
        curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, on_body);
    }
    if (warmup > 0 && batch(multi, easy, conns, warmup, 30000) != 0)
        return 1;
    t0 = now_ms();
    rc = batch(multi, easy, conns, n, 60000);
    wall = now_ms() - t0;
    if (rc != 0)
        return 1;
    printf("requests=%d wall_ms=%.3f\n", n, wall);
    for (i = 0; i < conns; i++)
        curl_easy_cleanup(easy[i]);
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
    free(easy);
    free(body);
    curl_global_cleanup();
    return 0;
}
