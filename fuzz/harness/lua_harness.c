/*
 * One libFuzzer harness for the Lua entry points of endaoment.partner.core.
 *
 * The core's C files are compiled into this binary (with the sanitizers and
 * libFuzzer's coverage instrumentation) and opened in an embedded Lua 5.4
 * state with luaopen_endaoment_partner_core, exactly as require() would. The
 * harness then loads fuzz/props/<FUZZ_TARGET>.lua, which returns a function of
 * the input bytes that calls the core and checks properties (see the script).
 * A broken property is a Lua error: this file prints it and aborts, so
 * libFuzzer keeps the input as a crash.
 *
 * FUZZ_HOME (environment, else the checkout this was built from) locates
 * fuzz/props and lua/.
 *
 * Allocation failures: the harness is linked with -Wl,--wrap=realloc, so the
 * core's only allocator call (strbuf_grow's realloc) comes here first. The
 * global Lua function fuzz_fail_alloc(n) makes the n-th realloc from now
 * fail (0: the next one; nil: none), so the property scripts can check the
 * out-of-memory paths: an "oom" error, nothing leaked, and the next call fine.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FUZZ_TARGET
#error "build with -DFUZZ_TARGET=\"name\" (a script in fuzz/props/)"
#endif
#ifndef FUZZ_HOME_DEFAULT
#define FUZZ_HOME_DEFAULT "."
#endif

int luaopen_endaoment_partner_core(lua_State *L);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *state;
static int prop_ref = LUA_NOREF;
static long fail_countdown = -1;

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

void *__wrap_realloc(void *p, size_t n)
{
    if (fail_countdown >= 0 && fail_countdown-- == 0)
        return NULL;
    return __real_realloc(p, n);
}

static int l_fail_alloc(lua_State *L)
{
    fail_countdown = lua_isnoneornil(L, 1) ? -1 : (long)luaL_checkinteger(L, 1);
    return 0;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

static void die(const char *what, lua_State *L)
{
    fprintf(stderr, "fuzz harness %s: %s: %s\n", FUZZ_TARGET, what, lua_tostring(L, -1));
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *home = getenv("FUZZ_HOME");
    char script[4096];
    lua_State *L;

    (void)argc;
    (void)argv;
    if (!home || !*home)
        home = FUZZ_HOME_DEFAULT;
    L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "fuzz harness: cannot create a Lua state\n");
        abort();
    }
    luaL_openlibs(L);
    luaL_requiref(L, "endaoment.partner.core", luaopen_endaoment_partner_core, 0);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_fail_alloc);
    lua_setglobal(L, "fuzz_fail_alloc");

    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/fuzz/?.lua;%s/lua/?.lua;%s/lua/?/init.lua;", home, home, home);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);

    snprintf(script, sizeof script, "%s/fuzz/props/%s.lua", home, FUZZ_TARGET);
    lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, script) != LUA_OK)
        die("cannot load the property script", L);
    if (lua_pcall(L, 0, 1, -2) != LUA_OK)
        die("the property script failed to start", L);
    if (!lua_isfunction(L, -1)) {
        lua_pushliteral(L, "the script must return a function");
        die(script, L);
    }
    prop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    state = L;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = state;

    lua_settop(L, 0);
    fail_countdown = -1;
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, prop_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 1) != LUA_OK)
        die("property failed", L);
    fail_countdown = -1;
    lua_settop(L, 0);
    /*
     * Free this input's garbage now: libFuzzer's leak check runs LeakSanitizer
     * after any input that malloc'ed more than it freed, which a deferred
     * collection would make every input. Costs a full GC of a small heap.
     */
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
