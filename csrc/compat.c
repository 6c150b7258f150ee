/* The shims csrc/compat.h promises; compiled into every module. */
#include "compat.h"

#if LUA_VERSION_NUM == 501
void epartner_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#else
/* Lua 5.2+ has every function compat.h names; C99 wants a non-empty translation unit. */
typedef int epartner_compat_nothing_to_add;
#endif
