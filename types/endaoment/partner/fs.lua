---@meta endaoment.partner.fs
-- Type definitions for lua-language-server (LuaCATS): csrc/fs.c, durable atomic
-- writes and POSIX record locks. Definitions only; nothing here runs.

---@class endaoment.partner.fs
local fs = {}

---Replaces path with data durably: a temporary file fsynced, renamed over path, the directory
---fsynced. Refuses NUL in the path and a symlink at path.
---@param path string
---@param data string
---@return true|nil ok
---@return string|nil message
function fs.write_atomic(path, data) end

---A POSIX write lock on the whole of path (created 0600 if missing, never deleted), taken
---without waiting; the kernel drops it when the process dies.
---@param path string
---@return endaoment.partner.fs.Lock|nil lock
---@return string|nil message says who holds it when it is busy
function fs.lock(path) end

---Many single-byte locks on one file (byte n for key n, 0 <= n <= 2^53), one descriptor.
---@param path string
---@return endaoment.partner.fs.LockSet|nil set
---@return string|nil message
function fs.lockset(path) end

---FNV-1a 64 of s, xor-folded to 48 bits: a byte of a lock set.
---@param s string
---@return integer n in [0, 2^48)
function fs.hash48(s) end

---Whether the file descriptor is a terminal (isatty(3)): fs.isatty(0) for standard input.
---@param fd integer
---@return boolean
function fs.isatty(fd) end

---@class endaoment.partner.fs.Lock
local Lock = {}

---Releases the lock; idempotent (also on garbage collection and, on 5.4, <close>).
---@return true
function Lock:unlock() end

---@class endaoment.partner.fs.LockSet
local LockSet = {}

---Takes the lock on byte n without waiting.
---@param n integer
---@return boolean|nil taken true; false when busy; nil on an error
---@return string|nil message who holds it (busy), or why it failed
function LockSet:try(n) end

---Releases the lock on byte n.
---@param n integer
---@return boolean|nil released true; false when it was not held; nil on an error
---@return string|nil message
function LockSet:release(n) end

---Releases every lock of the set and closes its descriptor; idempotent.
function LockSet:close() end

return fs
