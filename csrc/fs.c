/*
 * endaoment.partner.fs: durable atomic file replacement for journey state.
 *
 * The journey writes an idempotency key to disk before it sends the request
 * that uses it; if that write can be lost or torn, a crash can send a second
 * grant under a fresh key. Pure Lua cannot fsync, hence this module. It is
 * kept apart from the core so the core stays free of I/O.
 *
 *   fs.write_atomic(path, data) -> true | nil, message
 *   fs.lock(path)               -> lock | nil, message
 *   lock:unlock()               -- idempotent; also __gc and __close (5.4)
 *
 * fs.lock takes a POSIX record lock (fcntl F_SETLK, F_WRLCK, whole file) on
 * path, created 0600 if missing. The kernel drops it when the process dies,
 * so a SIGKILLed run never leaves a stale lock behind, and the lock file is
 * never deleted (deleting it would let a second locker lock a new inode
 * while a first still holds the old one).
 *
 * POSIX record locks belong to the process, not to the descriptor: a second
 * fcntl lock on the same file from the same process succeeds, and closing
 * ANY descriptor of the file drops the process's lock. So the lock keeps its
 * descriptor open until unlock, and one process must lock a file once:
 * fs.lock refuses a file that a live lock of the same Lua state holds. Locks
 * taken by two Lua states of one process do not see each other.
 *
 * Lua 5.1 has no luaL_setfuncs outside the core's shim, so functions are
 * registered one by one with lua_pushcfunction/lua_setfield.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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
    fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

static int push_message(lua_State *L, const char *message)
{
    lua_pushnil(L);
    lua_pushstring(L, message);
    return 2;
}

/* write_atomic(path, data) -> true | nil, message */
static int fs_write_atomic(lua_State *L)
{
    size_t plen, dlen;
    const char *path = luaL_checklstring(L, 1, &plen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    char tmp[4096];
    int fd, n, err;

    /* The C calls below would stop at the NUL and write another file than the caller named. */
    if (strlen(path) != plen)
        return push_message(L, "path contains a NUL byte");
    n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return push_message(L, "path too long");
    /*
     * A temp file of this name is a leftover of a crashed run with our pid,
     * or something planted there (a symlink to a file we would clobber):
     * remove it, then create a new file, never following a symlink
     * (O_EXCL fails on any existing name, O_NOFOLLOW says why in errno).
     */
    if (unlink(tmp) != 0 && errno != ENOENT)
        return push_errno(L, "cannot remove the stale", tmp, errno);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
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

/* ------------------------------------------------------------------------ */
/* fs.lock                                                                  */

#define LOCK_MT "endaoment.partner.fs.lock"
/* "dev:ino" of a file: two 64-bit decimals and a colon. */
#define LOCK_KEY_MAX 48

typedef struct {
    int fd; /* -1 once unlocked: the userdata is the descriptor's only owner */
    char path[]; /* the path as given, for __tostring */
} fs_lock;

static void lock_key(const struct stat *st, char key[LOCK_KEY_MAX])
{
    snprintf(key, LOCK_KEY_MAX, "%llu:%llu", (unsigned long long)st->st_dev,
             (unsigned long long)st->st_ino);
}

static void lock_release(fs_lock *lk)
{
    struct flock fl;

    if (lk->fd < 0)
        return;
    /* close() alone drops the lock; F_UNLCK first keeps the release explicit. */
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    (void)fcntl(lk->fd, F_SETLK, &fl);
    close(lk->fd);
    lk->fd = -1;
}

static int lock_unlock(lua_State *L)
{
    lock_release((fs_lock *)luaL_checkudata(L, 1, LOCK_MT));
    return 0;
}

static int lock_tostring(lua_State *L)
{
    fs_lock *lk = (fs_lock *)luaL_checkudata(L, 1, LOCK_MT);
    lua_pushfstring(L, "endaoment.partner.fs lock (%s): %s", lk->fd >= 0 ? "held" : "unlocked",
                    lk->path);
    return 1;
}

/*
 * Takes the write lock on fd without waiting. 0 when taken; otherwise fills
 * msg: who holds it (F_GETLK), or why fcntl failed.
 */
static int take_lock(int fd, char *msg, size_t cap)
{
    int attempt;

    for (attempt = 0; attempt < 3; attempt++) {
        struct flock fl;
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET; /* l_start = l_len = 0: the whole file, however long */
        if (fcntl(fd, F_SETLK, &fl) == 0)
            return 0;
        if (errno != EACCES && errno != EAGAIN) {
            snprintf(msg, cap, "cannot lock: %s", strerror(errno));
            return -1;
        }
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) {
            snprintf(msg, cap, "locked by another process (pid %ld)", (long)fl.l_pid);
            return -1;
        }
        /* Released between the two calls: try again. */
    }
    snprintf(msg, cap, "locked by another process");
    return -1;
}

/* lock(path) -> lock | nil, message. Upvalue 1: this state's live locks, "dev:ino" -> lock. */
static int fs_lock_open(lua_State *L)
{
    size_t plen;
    const char *path = luaL_checklstring(L, 1, &plen);
    char key[LOCK_KEY_MAX], msg[128];
    struct stat st;
    fs_lock *lk;

    lua_settop(L, 1);
    if (strlen(path) != plen)
        return push_message(L, "path contains a NUL byte");
    /*
     * Refuse a file this state already holds before opening it: opening and
     * closing another descriptor of it would drop the lock we hold.
     */
    if (stat(path, &st) == 0) {
        lock_key(&st, key);
        lua_getfield(L, lua_upvalueindex(1), key);
        lk = (fs_lock *)lua_touserdata(L, -1);
        if (lk && lk->fd >= 0) {
            lua_pushnil(L);
            lua_pushfstring(L, "locked by this process (%s); lock a file once per process", path);
            return 2;
        }
        lua_pop(L, 1);
    }

    /* 2: the userdata exists before the descriptor, so the descriptor is owned from birth. */
    lk = (fs_lock *)lua_newuserdata(L, sizeof *lk + plen + 1);
    lk->fd = -1;
    memcpy(lk->path, path, plen + 1);
    luaL_getmetatable(L, LOCK_MT);
    lua_setmetatable(L, 2);

    lk->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lk->fd < 0)
        return push_errno(L, "cannot open lock file", path, errno);
    if (take_lock(lk->fd, msg, sizeof msg) != 0) {
        lock_release(lk);
        return push_message(L, msg);
    }
    if (fstat(lk->fd, &st) == 0) {
        lock_key(&st, key);
        lua_pushvalue(L, 2);
        lua_setfield(L, lua_upvalueindex(1), key);
    }
    lua_settop(L, 2);
    return 1;
}

/* Exported for the module loader; no prototype exists in any header. */
EPARTNER_EXPORT int luaopen_endaoment_partner_fs(lua_State *L);

EPARTNER_EXPORT int luaopen_endaoment_partner_fs(lua_State *L)
{
    /* Field by field: no luaL_setfuncs, whose 5.1 shim lives in the core. */
    if (luaL_newmetatable(L, LOCK_MT)) {
        lua_pushcfunction(L, lock_unlock);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, lock_unlock);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, lock_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_newtable(L);
        lua_pushcfunction(L, lock_unlock);
        lua_setfield(L, -2, "unlock");
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);

    lua_newtable(L);
    lua_pushcfunction(L, fs_write_atomic);
    lua_setfield(L, -2, "write_atomic");
    /* The live locks of this state, weak so that a dropped lock is still collected. */
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, fs_lock_open, 1);
    lua_setfield(L, -2, "lock");
    return 1;
}
