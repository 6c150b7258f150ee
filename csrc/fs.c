/*
 * endaoment.partner.fs: durable atomic file replacement for journey state,
 * and the POSIX record locks that make a journey's claim exclusive.
 *
 * The journey writes an idempotency key to disk before it sends the request
 * that uses it; if that write can be lost or torn, a crash can send a second
 * grant under a fresh key. Pure Lua cannot fsync, hence this module. It is
 * kept apart from the core so the core stays free of I/O.
 *
 *   fs.write_atomic(path, data) -> true | nil, message
 *   fs.lock(path)               -> lock | nil, message
 *   lock:unlock()               -- idempotent; also __gc and __close (5.4)
 *   fs.lockset(path)            -> set | nil, message
 *   set:try(n)                  -> true | false, message (busy) | nil, message (error)
 *   set:release(n)              -> true (released) | false (not held) | nil, message
 *   set:close()                 -- idempotent; also __gc and __close (5.4)
 *   fs.hash48(s)                -> integer in [0, 2^48): FNV-1a 64 of s, xor-folded
 *   fs.isatty(fd)               -> boolean
 *
 * fs.lock takes a POSIX record lock (fcntl F_SETLK, F_WRLCK, whole file) on
 * path, created 0600 if missing. The kernel drops it when the process dies,
 * so a SIGKILLed run never leaves a stale lock behind, and the lock file is
 * never deleted (deleting it would let a second locker lock a new inode
 * while a first still holds the old one).
 *
 * fs.lockset opens one file (created 0600 if missing, never deleted) and
 * takes write locks on single bytes of it, byte n for key n (0 <= n <= 2^53;
 * locks may lie past the end of the file, which stays empty): many
 * independent locks, one descriptor. The journey stores hash a journey id to
 * a byte with fs.hash48; two ids with the same hash only serialise.
 *
 * POSIX record locks belong to the process, not to the descriptor: a second
 * fcntl lock on the same bytes from the same process succeeds, and closing
 * ANY descriptor of the file drops every lock the process holds on it. So
 * a lock or a set keeps its descriptor open until it is released, it is the
 * only descriptor this Lua state opens on that file (fs.lock and fs.lockset
 * refuse a file that a lock or set of the same state has open, by dev:ino),
 * and a set remembers which bytes it holds and answers "held by this
 * process" for them itself. Locks taken by two Lua states of one process do
 * not see each other.
 *
 * The files open in this state are counted in a registry table ("dev:ino"
 * -> true) that a lock or set leaves when its descriptor is closed, not when
 * it becomes garbage: a weak table would forget a dropped lock before its
 * finalizer closes the descriptor, and a new lock taken in between would
 * then be dropped by that close.
 *
 * Functions are registered with luaL_setfuncs (csrc/compat.c has its Lua 5.1
 * shim, compiled into this module too).
 */
/* Before any header: 64-bit off_t, for byte offsets up to 2^53 on 32-bit systems too. */
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "compat.h"

/* A lock set's byte offsets reach 2^53: off_t must hold them. */
typedef char fs_off_t_holds_2_pow_53[sizeof(off_t) >= 8 ? 1 : -1];

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
/* The registry of files open in this state                                 */

#define LOCK_MT "endaoment.partner.fs.lock"
#define LOCKSET_MT "endaoment.partner.fs.lockset"
/* Registry field: "dev:ino" -> true for every file a live lock or set has open. */
#define OPEN_FILES "endaoment.partner.fs.open_files"
/* "dev:ino" of a file: two 64-bit decimals and a colon. */
#define LOCK_KEY_MAX 48

/* Byte offsets of a lock set: 0..2^53, the integers every Lua number holds exactly. */
#define LOCKSET_MAX_OFFSET 9007199254740992.0

static void file_key(const struct stat *st, char key[LOCK_KEY_MAX])
{
    snprintf(key, LOCK_KEY_MAX, "%llu:%llu", (unsigned long long)st->st_dev,
             (unsigned long long)st->st_ino);
}

/* Pushes the registry table of open files. */
static void push_open_files(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, OPEN_FILES);
}

/* 1 if a lock or set of this state has the file of key open. */
static int file_is_open(lua_State *L, const char *key)
{
    int open;

    push_open_files(L);
    lua_getfield(L, -1, key);
    open = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return open;
}

static void file_set_open(lua_State *L, const char *key, int open)
{
    push_open_files(L);
    if (open)
        lua_pushboolean(L, 1);
    else
        lua_pushnil(L);
    lua_setfield(L, -2, key);
    lua_pop(L, 1);
}

/*
 * Closes the descriptor of a lock or set, once: the record leaves the
 * registry first, so that if that raises (out of memory) the descriptor is
 * still open and owned, and its locks are still held, rather than the other
 * way round.
 */
static void close_owned(lua_State *L, int *fd, char key[LOCK_KEY_MAX])
{
    if (*fd < 0)
        return;
    if (key[0] != '\0') {
        file_set_open(L, key, 0);
        key[0] = '\0';
    }
    close(*fd); /* drops every lock this process holds on the file */
    *fd = -1;
}

/*
 * Refuses a path whose file this state already has open, before opening it:
 * opening and closing another descriptor of it would drop the locks held.
 * Returns 0 if the path may be opened, else pushes nil, message and returns 2.
 */
static int refuse_open_file(lua_State *L, const char *path, const char *what)
{
    struct stat st;
    char key[LOCK_KEY_MAX];

    if (stat(path, &st) != 0)
        return 0; /* missing: nothing of ours can have it open */
    file_key(&st, key);
    if (!file_is_open(L, key))
        return 0;
    lua_pushnil(L);
    lua_pushfstring(L, "%s by this process (%s); %s", what, path,
                    "a process opens a lock file once (drop or close the other lock)");
    return 2;
}

/* Registers the file open on fd under key. 0, or -1 with errno set. */
static int register_fd(lua_State *L, int fd, char key[LOCK_KEY_MAX])
{
    struct stat st;

    if (fstat(fd, &st) != 0)
        return -1;
    file_key(&st, key);
    file_set_open(L, key, 1);
    return 0;
}

/*
 * Takes a write lock on len bytes of fd from start (len 0: to the end of
 * the file, however long) without waiting. 0 when taken; 1 when another
 * process holds a conflicting lock, msg says who (F_GETLK); -1 when fcntl
 * failed, msg says why.
 */
static int take_lock(int fd, off_t start, off_t len, char *msg, size_t cap)
{
    int attempt;

    for (attempt = 0; attempt < 3; attempt++) {
        struct flock fl;
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = start;
        fl.l_len = len;
        if (fcntl(fd, F_SETLK, &fl) == 0)
            return 0;
        if (errno != EACCES && errno != EAGAIN) {
            snprintf(msg, cap, "cannot lock: %s", strerror(errno));
            return -1;
        }
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = start;
        fl.l_len = len;
        if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) {
            snprintf(msg, cap, "locked by another process (pid %ld)", (long)fl.l_pid);
            return 1;
        }
        /* Released between the two calls: try again. */
    }
    snprintf(msg, cap, "locked by another process");
    return 1;
}

/* ------------------------------------------------------------------------ */
/* fs.lock                                                                  */

typedef struct {
    int fd; /* -1 once unlocked: the userdata is the descriptor's only owner */
    char key[LOCK_KEY_MAX]; /* registry key while the descriptor is open, else "" */
    char path[]; /* the path as given, for __tostring */
} fs_lock;

static void lock_release(lua_State *L, fs_lock *lk)
{
    struct flock fl;

    if (lk->fd < 0)
        return;
    /* close() alone drops the lock; F_UNLCK first keeps the release explicit. */
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    (void)fcntl(lk->fd, F_SETLK, &fl);
    close_owned(L, &lk->fd, lk->key);
}

static int lock_unlock(lua_State *L)
{
    lock_release(L, (fs_lock *)luaL_checkudata(L, 1, LOCK_MT));
    return 0;
}

static int lock_tostring(lua_State *L)
{
    fs_lock *lk = (fs_lock *)luaL_checkudata(L, 1, LOCK_MT);
    lua_pushfstring(L, "endaoment.partner.fs lock (%s): %s", lk->fd >= 0 ? "held" : "unlocked",
                    lk->path);
    return 1;
}

/* lock(path) -> lock | nil, message */
static int fs_lock_open(lua_State *L)
{
    size_t plen;
    const char *path = luaL_checklstring(L, 1, &plen);
    char msg[128];
    fs_lock *lk;
    int err;

    lua_settop(L, 1);
    if (strlen(path) != plen)
        return push_message(L, "path contains a NUL byte");
    if (refuse_open_file(L, path, "locked"))
        return 2;

    /* 2: the userdata exists before the descriptor, so the descriptor is owned from birth. */
    lk = (fs_lock *)lua_newuserdata(L, sizeof *lk + plen + 1);
    lk->fd = -1;
    lk->key[0] = '\0';
    memcpy(lk->path, path, plen + 1);
    luaL_getmetatable(L, LOCK_MT);
    lua_setmetatable(L, 2);

    lk->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lk->fd < 0)
        return push_errno(L, "cannot open lock file", path, errno);
    if (register_fd(L, lk->fd, lk->key) != 0) {
        err = errno;
        lock_release(L, lk);
        return push_errno(L, "cannot stat lock file", path, err);
    }
    if (take_lock(lk->fd, 0, 0, msg, sizeof msg) != 0) {
        lock_release(L, lk);
        return push_message(L, msg);
    }
    lua_settop(L, 2);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* fs.lockset                                                               */

typedef struct {
    int fd;          /* -1 once closed: the userdata is the descriptor's only owner */
    uint64_t *held;  /* the offsets this set holds, ascending; owned (malloc) */
    size_t n, cap;   /* entries used and allocated in held */
    char key[LOCK_KEY_MAX]; /* registry key while the descriptor is open, else "" */
    char path[];     /* the path as given, for messages and __tostring */
} fs_lockset;

/* The one release path, used by close, __gc and __close: idempotent. */
static void lockset_release(lua_State *L, fs_lockset *s)
{
    close_owned(L, &s->fd, s->key);
    free(s->held);
    s->held = NULL;
    s->n = s->cap = 0;
}

/* Index of off in s->held, or of where it would go; 1 if present. */
static int lockset_find(const fs_lockset *s, uint64_t off, size_t *pos)
{
    size_t lo = 0, hi = s->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->held[mid] < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return lo < s->n && s->held[lo] == off;
}

/* Room for one more offset. 0, or -1 when out of memory (nothing changed). */
static int lockset_reserve(fs_lockset *s)
{
    size_t cap;
    uint64_t *p;

    if (s->n < s->cap)
        return 0;
    cap = s->cap ? s->cap * 2 : 16;
    if (cap > SIZE_MAX / sizeof *p)
        return -1;
    p = (uint64_t *)realloc(s->held, cap * sizeof *p);
    if (p == NULL)
        return -1;
    s->held = p;
    s->cap = cap;
    return 0;
}

/* Argument idx as a byte offset, 0..2^53; raises otherwise (before anything is taken). */
static uint64_t check_offset(lua_State *L, int idx)
{
    lua_Number d;

#if EPARTNER_HAVE_INTEGER
    if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        if (i < 0 || (uint64_t)i > (uint64_t)LOCKSET_MAX_OFFSET)
            luaL_argerror(L, idx, "byte offset must be an integer from 0 to 2^53");
        return (uint64_t)i;
    }
#endif
    d = luaL_checknumber(L, idx);
    /* NaN fails both comparisons; the cast is defined once the range is checked */
    if (!(d >= 0 && d <= LOCKSET_MAX_OFFSET) || (lua_Number)(uint64_t)d != d)
        luaL_argerror(L, idx, "byte offset must be an integer from 0 to 2^53");
    return (uint64_t)d;
}

static fs_lockset *check_lockset(lua_State *L)
{
    return (fs_lockset *)luaL_checkudata(L, 1, LOCKSET_MT);
}

/* set:try(n) -> true | false, message (held elsewhere) | nil, message (error) */
static int lockset_try(lua_State *L)
{
    fs_lockset *s = check_lockset(L);
    uint64_t off = check_offset(L, 2);
    char msg[128];
    size_t pos;
    int rc;

    if (s->fd < 0)
        return push_message(L, "lock set is closed");
    if (lockset_find(s, off, &pos)) {
        /* fcntl would grant it again: a process never conflicts with itself */
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "held by this process");
        return 2;
    }
    /* Room first: once the kernel grants the lock, recording it cannot fail. */
    if (lockset_reserve(s) != 0)
        return push_message(L, "out of memory");
    rc = take_lock(s->fd, (off_t)off, 1, msg, sizeof msg);
    if (rc == 1) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, msg);
        return 2;
    }
    if (rc != 0)
        return push_message(L, msg);
    memmove(s->held + pos + 1, s->held + pos, (s->n - pos) * sizeof *s->held);
    s->held[pos] = off;
    s->n++;
    lua_pushboolean(L, 1);
    return 1;
}

/* set:release(n) -> true (released) | false (not held by this set) | nil, message */
static int lockset_unlock(lua_State *L)
{
    fs_lockset *s = check_lockset(L);
    uint64_t off = check_offset(L, 2);
    struct flock fl;
    size_t pos;

    if (s->fd < 0 || !lockset_find(s, off, &pos)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)off;
    fl.l_len = 1;
    /* Splitting a merged range can need a lock record (ENOLCK): then it stays held and recorded. */
    if (fcntl(s->fd, F_SETLK, &fl) != 0)
        return push_errno(L, "cannot unlock a byte of", s->path, errno);
    memmove(s->held + pos, s->held + pos + 1, (s->n - pos - 1) * sizeof *s->held);
    s->n--;
    lua_pushboolean(L, 1);
    return 1;
}

static int lockset_close(lua_State *L)
{
    lockset_release(L, check_lockset(L));
    return 0;
}

static int lockset_tostring(lua_State *L)
{
    fs_lockset *s = check_lockset(L);
    if (s->fd >= 0)
        lua_pushfstring(L, "endaoment.partner.fs lockset (open, %d held): %s", (int)(s->n > INT_MAX ? INT_MAX : s->n),
                        s->path);
    else
        lua_pushfstring(L, "endaoment.partner.fs lockset (closed): %s", s->path);
    return 1;
}

/* lockset(path) -> set | nil, message */
static int fs_lockset_open(lua_State *L)
{
    size_t plen;
    const char *path = luaL_checklstring(L, 1, &plen);
    fs_lockset *s;
    int err;

    lua_settop(L, 1);
    if (strlen(path) != plen)
        return push_message(L, "path contains a NUL byte");
    if (refuse_open_file(L, path, "open"))
        return 2;

    /* 2: the userdata exists before the descriptor, so the descriptor is owned from birth. */
    s = (fs_lockset *)lua_newuserdata(L, sizeof *s + plen + 1);
    s->fd = -1;
    s->held = NULL;
    s->n = s->cap = 0;
    s->key[0] = '\0';
    memcpy(s->path, path, plen + 1);
    luaL_getmetatable(L, LOCKSET_MT);
    lua_setmetatable(L, 2);

    s->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->fd < 0)
        return push_errno(L, "cannot open lock file", path, errno);
    if (register_fd(L, s->fd, s->key) != 0) {
        err = errno;
        lockset_release(L, s);
        return push_errno(L, "cannot stat lock file", path, err);
    }
    lua_settop(L, 2);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* fs.hash48, fs.isatty                                                     */

/* hash48(s) -> FNV-1a 64 of the bytes of s, folded to 48 bits (exact in every Lua number). */
static int fs_hash48(lua_State *L)
{
    size_t len, i;
    const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 1, &len);
    uint64_t h = UINT64_C(14695981039346656037);

    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(1099511628211);
    }
    h = (h >> 48) ^ (h & UINT64_C(0xFFFFFFFFFFFF));
#if EPARTNER_HAVE_INTEGER
    lua_pushinteger(L, (lua_Integer)h);
#else
    lua_pushnumber(L, (lua_Number)h);
#endif
    return 1;
}

/* isatty(fd) -> boolean; false for anything that is not an open terminal */
static int fs_isatty(lua_State *L)
{
    lua_Number d = luaL_checknumber(L, 1);

    lua_pushboolean(L, d >= 0 && d <= (lua_Number)INT_MAX && (lua_Number)(int)d == d && isatty((int)d) == 1);
    return 1;
}

/* Exported for the module loader; no prototype exists in any header. */
EPARTNER_EXPORT int luaopen_endaoment_partner_fs(lua_State *L);

EPARTNER_EXPORT int luaopen_endaoment_partner_fs(lua_State *L)
{
    static const luaL_Reg lock_meta[] = {
        { "__gc", lock_unlock },
        { "__close", lock_unlock },
        { "__tostring", lock_tostring },
        { NULL, NULL },
    };
    static const luaL_Reg lock_methods[] = {
        { "unlock", lock_unlock },
        { NULL, NULL },
    };
    static const luaL_Reg lockset_meta[] = {
        { "__gc", lockset_close },
        { "__close", lockset_close },
        { "__tostring", lockset_tostring },
        { NULL, NULL },
    };
    static const luaL_Reg lockset_methods[] = {
        { "try", lockset_try },
        { "release", lockset_unlock },
        { "close", lockset_close },
        { NULL, NULL },
    };
    static const luaL_Reg funcs[] = {
        { "write_atomic", fs_write_atomic },
        { "lock", fs_lock_open },
        { "lockset", fs_lockset_open },
        { "hash48", fs_hash48 },
        { "isatty", fs_isatty },
        { NULL, NULL },
    };

    if (luaL_newmetatable(L, LOCK_MT)) {
        luaL_setfuncs(L, lock_meta, 0);
        lua_newtable(L);
        luaL_setfuncs(L, lock_methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, LOCKSET_MT)) {
        luaL_setfuncs(L, lockset_meta, 0);
        lua_newtable(L);
        luaL_setfuncs(L, lockset_methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    /* One table per state, kept if the module is loaded again: live locks stay registered. */
    lua_getfield(L, LUA_REGISTRYINDEX, OPEN_FILES);
    if (!lua_istable(L, -1)) {
        lua_newtable(L);
        lua_setfield(L, LUA_REGISTRYINDEX, OPEN_FILES);
    }
    lua_pop(L, 1);

    lua_newtable(L);
    luaL_setfuncs(L, funcs, 0);
    return 1;
}
