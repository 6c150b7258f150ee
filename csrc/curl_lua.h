/*
 * The Lua glue of endaoment.partner.curl, shared by the blocking transport
 * (curl.c, which also opens the module) and the multi handle
 * (curl_lua_multi.c). The C below it, curl_transfer.h and curl_multi.h, has
 * no Lua in it.
 *
 * Every function here runs outside libcurl: nothing calls Lua while libcurl
 * runs (its callbacks only fill C buffers and counters).
 */
#ifndef EPARTNER_CURL_LUA_H
#define EPARTNER_CURL_LUA_H

#include "compat.h"
#include "curl_transfer.h"

#define ECURL_DEFAULT_MAX_BODY 8388608

/* Options of curl.new and curl.multi; the strings live on the Lua stack (indexes 2-7). */
typedef struct {
    const char *ca_file; /* the system bundle when not given and readable */
    size_t ca_len;
    const char *user_agent;
    size_t ua_len;
    const char *proxy; /* NULL: libcurl reads the environment */
    size_t proxy_len;
    const char *noproxy;
    size_t noproxy_len;
    size_t max_body;
    int allow_http_loopback;
} ecurl_lua_options;

/* The first stack index free after ecurl_lua_read_options (curl.multi reads its own from here). */
#define ECURL_LUA_OPTIONS_TOP 8

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/*
 * Pushes nil and { kind, message, curl_code?, elapsed_ms?, sends? }; returns 2.
 * elapsed_ms < 0 and sends < 0 leave those out (a failure found before
 * libcurl ran).
 */
int ecurl_lua_push_error(lua_State *L, const ecurl_error *e, double elapsed_ms, long sends);
/* Pushes { status, headers, body, reused, elapsed_ms, sends, http_version? }. */
void ecurl_lua_push_response(lua_State *L, ecurl_transfer *tr);
/* Reads the options table at index 1 (settop 1, then fields at 2-7); raises on a bad option. */
void ecurl_lua_read_options(lua_State *L, const char *fname, ecurl_lua_options *o);
/*
 * The transport's config from the options: ecurl_config_init and the proxy.
 * Returns 0, or -1 with err set (cfg may be partly set: release it).
 */
int ecurl_lua_config_init(ecurl_config *cfg, const ecurl_lua_options *o, int share_dns, ecurl_error *err);
/*
 * Pushes the request table's fields (at idx) above *base and checks them;
 * nothing is allocated, and only a raising __index can raise. The strings in
 * req point into the stack: keep it until the transfer has begun.
 */
int ecurl_lua_read_request(lua_State *L, int idx, ecurl_request *req, int *base, ecurl_error *err);
/* ecurl_transfer_begin() plus every header of the request table; never raises. */
int ecurl_lua_begin_request(lua_State *L, int base, ecurl_transfer *tr, const ecurl_config *cfg,
                            const ecurl_request *req, ecurl_error *err);
/* Adds curl.multi to the module table on the top of the stack (curl_lua_multi.c). */
void ecurl_lua_multi_register(lua_State *L);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
