/*
 * endaoment.partner.fs: durable atomic file replacement for journey state.
 *
 * The journey writes an idempotency key to disk before it sends the request
 * that uses it; if that write can be lost or torn, a crash can send a second
 * grant under a fresh key. Pure Lua cannot fsync, hence this module. It is
 * kept apart from the core so the core stays free of I/O.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "compat.h"

static int push_errno(lua_State *L, const char *what, const char *path, int err)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(err));
    return 2;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The directory entry of the rename must reach the disk too. */
static int fsync_parent(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n;
    int fd, rc;

    if (slash == NULL) {
        dir[0] = '.';
        n = 1;
    } else {
        n = (size_t)(slash - path);
        if (n == 0)
            n = 1; /* "/file" lives in "/" */
        if (n >= sizeof dir)
            return -1;
        memcpy(dir, path, n);
    }
    dir[n] = '\0';
    fd = open(dir, O_RDONLY);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

/* write_atomic(path, data) -> true | nil, message */
static int fs_write_atomic(lua_State *L)
{
    size_t plen, dlen;
    const char *path = luaL_checklstring(L, 1, &plen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    char tmp[4096];
    int fd, n, err;

    n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) {
        lua_pushnil(L);
        lua_pushstring(L, "path too long");
        return 2;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return push_errno(L, "cannot create", tmp, errno);
    if (write_all(fd, data, dlen) != 0 || fsync(fd) != 0) {
        err = errno;
        close(fd);
        unlink(tmp);
        return push_errno(L, "cannot write", tmp, err);
    }
    if (close(fd) != 0) {
        err = errno;
        unlink(tmp);
        return push_errno(L, "cannot close", tmp, err);
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        return push_errno(L, "cannot rename onto", path, err);
    }
    if (fsync_parent(path) != 0)
        return push_errno(L, "cannot sync the directory of", path, errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* Exported for the module loader; no prototype exists in any header. */
EPARTNER_EXPORT int luaopen_endaoment_partner_fs(lua_State *L);

EPARTNER_EXPORT int luaopen_endaoment_partner_fs(lua_State *L)
{
    /* One function: no luaL_setfuncs, whose 5.1 shim lives in the core. */
    lua_newtable(L);
    lua_pushcfunction(L, fs_write_atomic);
    lua_setfield(L, -2, "write_atomic");
    return 1;
}
