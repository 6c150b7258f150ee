/*
 * A minimal Lua 5.4 interpreter built with AddressSanitizer and UBSan, for
 * running the busted suites on the sanitized C modules (scripts/sanitize.sh).
 *
 * Why not lua5.4 with LD_PRELOAD of the ASan runtime: the preload is
 * inherited by every process a spec starts (sh, bash, nginx, openssl,
 * PostgreSQL), which then run under a runtime they were not built for. Here
 * the runtime lives in this executable only; scripts/sanitize.sh puts a
 * `lua5.4` symlink to it first in PATH, so the Lua children the specs start
 * (sandbox servers, lock holders) are sanitized too, and nothing else is.
 *
 * Accepts what the specs use of lua.c's command line:
 *   lua5.4 [-e stat | -l mod | -v | -E | -W]... [script [args] | -]
 * with arg[] laid out as lua.c does (arg[0] the script, arg[-1]... the
 * interpreter's own options, arg[-n] its name).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *progname = "lua5.4";

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int report(lua_State *L, int status)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(error object is not a string)");
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

static int docall(lua_State *L, int narg, int nres)
{
    int status, base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    status = lua_pcall(L, narg, nres, base);
    lua_remove(L, base);
    return status;
}

static int dostring(lua_State *L, const char *s, const char *name)
{
    int status = luaL_loadbuffer(L, s, strlen(s), name);
    if (status == LUA_OK)
        status = docall(L, 0, 0);
    return report(L, status);
}

static int dolibrary(lua_State *L, const char *name)
{
    int status;
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    status = docall(L, 1, 1);
    if (status == LUA_OK)
        lua_setglobal(L, name);
    return report(L, status);
}

int main(int argc, char **argv)
{
    lua_State *L;
    int script, i, status = LUA_OK, n;

    if (argv[0] && argv[0][0])
        progname = argv[0];
    L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "%s: cannot create state: not enough memory\n", progname);
        return 1;
    }
    luaL_openlibs(L);

    /* the script: the first argument that is not an option (or "-", or past "--") */
    for (script = 1; script < argc; script++) {
        const char *a = argv[script];
        if (a[0] != '-' || strcmp(a, "-") == 0)
            break;
        if (strcmp(a, "--") == 0) {
            script++;
            break;
        }
        if ((strcmp(a, "-e") == 0 || strcmp(a, "-l") == 0) && script + 1 < argc)
            script++;
    }

    /* arg: the script at 0, interpreter options below, script arguments above */
    if (script >= argc)
        script = 0; /* no script: the interpreter's name at 0, as lua.c does */
    lua_createtable(L, argc - script, script + 1);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");

    for (i = 1; i < (script ? script : argc) && status == LUA_OK; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-e") == 0)
            status = dostring(L, argv[++i], "=(command line)");
        else if (strcmp(a, "-l") == 0)
            status = dolibrary(L, argv[++i]);
        else if (strcmp(a, "-v") == 0)
            printf("%s (AddressSanitizer build for endaoment-partner)\n", LUA_RELEASE);
        else if (strcmp(a, "-W") == 0)
            lua_warning(L, "@on", 0);
        else if (strcmp(a, "-E") == 0 || strcmp(a, "--") == 0)
            ;
        else {
            fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
            status = LUA_ERRRUN;
        }
    }
    if (status == LUA_OK && script > 0) {
        const char *fname = strcmp(argv[script], "-") == 0 ? NULL : argv[script];
        status = luaL_loadfile(L, fname);
        if (status == LUA_OK) {
            n = argc - script - 1;
            luaL_checkstack(L, n + 3, "too many arguments to script");
            for (i = script + 1; i < argc; i++)
                lua_pushstring(L, argv[i]);
            status = docall(L, n, LUA_MULTRET);
        }
        report(L, status);
    } else if (status == LUA_OK && argc == 1) {
        /* no script and no -e: run stdin, as lua.c does when it is not a terminal */
        status = luaL_loadfile(L, NULL);
        if (status == LUA_OK)
            status = docall(L, 0, 0);
        report(L, status);
    }
    lua_close(L);
    return status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
