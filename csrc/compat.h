/*
 * Private Lua 5.1 / 5.2 / 5.3 / 5.4 / LuaJIT compatibility shims, compiled
 * into every module (csrc/compat.c is in the source list of core, curl and
 * fs): each .so carries its own copy, so no module depends on another being
 * loaded first.
 *
 * Every shim is prefixed and hidden: LuaJIT 2.1 (and OpenResty's nginx
 * binary) export their own luaL_setfuncs, and an unprefixed definition of
 * ours could interpose on theirs, or theirs on ours.
 */
#ifndef EPARTNER_COMPAT_H
#define EPARTNER_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if defined(_WIN32)
#define EPARTNER_EXPORT __declspec(dllexport)
#else
#define EPARTNER_EXPORT __attribute__((visibility("default")))
#endif

#if LUA_VERSION_NUM == 501
#pragma GCC visibility push(hidden)
/* luaL_setfuncs of Lua 5.2+: registers l into the table below the nup upvalues, and pops them. */
void epartner_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
#pragma GCC visibility pop
#define luaL_setfuncs epartner_setfuncs
#define lua_rawlen(L, i) lua_objlen((L), (i))
#endif

/* Lua 5.3 introduced the integer subtype; before it every number is a double. */
#if LUA_VERSION_NUM >= 503
#define EPARTNER_HAVE_INTEGER 1
#else
#define EPARTNER_HAVE_INTEGER 0
#endif

#endif
