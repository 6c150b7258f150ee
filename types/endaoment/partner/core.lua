---@meta endaoment.partner.core
-- Type definitions for lua-language-server (LuaCATS): the C core, csrc/core*.c.
-- No I/O: validation, JSON encoding, UUIDs, idempotency keys, error objects.
-- Definitions only; nothing here runs.

---@class endaoment.partner.core
---@field version string the SDK's version, "0.1.0" (EP_VERSION in csrc/core.h)
---@field null lightuserdata JSON null: the same value as cjson.null
---@field Error table the metatable of error objects (__tostring, __name "endaoment.partner.Error")
---@field array_mt table set on an empty table to encode it as [] instead of {}
---@field DEFAULT_KEY_NAMESPACE string the UUID mixed into derived idempotency keys by default
---@field sha256_impl string "sha-ni" (x86 SHA extensions) or "portable": SHA-256's block function here
local core = {}

---A random UUID v4 (libuuid).
---@return string uuid lower-case, 36 characters
function core.uuid4() end

---Whether s is a UUID string (any version, 8-4-4-4-12 hex digits).
---@param s any
---@return boolean
function core.is_uuid(s) end

---A partner identifier trimmed and checked (16-64 printable ASCII characters after trimming).
---@param s any
---@return string|nil id the trimmed identifier
---@return string|nil message why it was refused
function core.partner_identifier(s) end

---Dollars as a decimal string ("125.50", at most 6 decimals) to micro-dollars ("125500000").
---@param dollars string|integer
---@return string|nil micro
---@return string|nil message
function core.dollars_to_micro(dollars) end

---Micro-dollars ("125500000") to dollars ("125.50"; sub-cent digits only when not zero).
---@param micro string|integer
---@return string|nil dollars
---@return string|nil message
function core.micro_to_dollars(micro) end

---Whether v is a valid micro-dollar amount: a string of digits or an integer, positive, within int64.
---@param v any
---@return true|nil ok
---@return string|nil message
function core.is_micro(v) end

---The number of UTF-8 characters of s.
---@param s any
---@return integer|nil length
---@return string|nil message for invalid UTF-8 or a non-string
function core.utf8_len(s) end

---Whether s is an ISO-8601 UTC timestamp with a real calendar date (2026-05-04T14:32:01.000Z).
---@param s any
---@return true|nil ok
---@return string|nil message
function core.is_timestamp(s) end

---Whether s is an e-mail address the API accepts.
---@param s any
---@return true|nil ok
---@return string|nil message
function core.is_email(s) end

---Whether s is an EIN: 9 digits, optionally NN-NNNNNNN.
---@param s any
---@return true|nil ok
---@return string|nil message
function core.is_ein(s) end

---Whether s may be sent as an HTTP header value (no CR, LF or other control characters).
---@param s any
---@return true|nil ok
---@return string|nil message
function core.header_value_ok(s) end

---Whether s may be sent as an HTTP header name (an RFC 9110 token).
---@param s any
---@return true|nil ok
---@return string|nil message
function core.header_name_ok(s) end

---A new error object (metatable core.Error). extra's fields are copied; kind and message win.
---@param kind endaoment.partner.ErrorKind|string
---@param message string
---@param extra? table
---@return endaoment.partner.Error
function core.error(kind, message, extra) end

---Encodes any JSON-able Lua value (tables with array_mt as arrays, core.null as null).
---@param value any
---@return string|nil json
---@return endaoment.partner.Error|nil err kind "invalid"
function core.encode(value) end

---Validates and encodes a call's body: the JSON to send and what the core learned from it.
---@param op string an operation name such as "record_cash_donation"
---@param body table
---@param opts? { strict?: boolean, idempotency_key?: string }
---@return string|nil json
---@return endaoment.partner.core.PrepareInfo|endaoment.partner.Error info the info, or the error (kind "invalid")
function core.prepare(op, body, opts) end

---Validates a call's body without encoding it.
---@param op string
---@param body table
---@param opts? { strict?: boolean }
---@return true|nil ok
---@return endaoment.partner.Error|{ warnings: string[] }|nil err_or_info the error, or warnings of guessed rules
function core.validate(op, body, opts) end

---SHA-256 of s, as 64 lower-case hex digits.
---@param s string
---@return string hex
function core.sha256_hex(s) end

---The idempotency key derived from a namespace, an operation and the partner's own id
---(docs/derived-keys.md): a strict UUID v4. Raises on bad arguments.
---@param namespace string a UUID
---@param op string a-z, 0-9 and _
---@param natural_id string non-empty, at most 1024 bytes, no NUL
---@return string key
function core.derive_key(namespace, op, natural_id) end

---The key derived from the natural id at body[k1][k2] (rawget), and that id; nothing when the id is
---absent, not a string, empty, over 1024 bytes or holds a NUL.
---@param namespace string a UUID
---@param op string a-z, 0-9 and _
---@param body any
---@param k1 string
---@param k2? string
---@return string? key
---@return string? natural_id
function core.derive_natural(namespace, op, body, k1, k2) end

---Decodes one JSON text (strict RFC 8259) into lua-cjson's values: plain tables, every number a
---float, null as core.null. Bad JSON gives nil and a message naming the character.
---@param s string
---@return any value
---@return string? message
function core.decode(s) end

---@class endaoment.partner.core.PrepareInfo
---@field idempotency_key? string the body's idempotencyKey (keyed operations)
---@field partner_user_identifier? string the trimmed partnerUserIdentifier the body carries
---@field warnings? string[] rules the docs leave open that this body breaks (sent anyway unless strict)

return core
