---@meta endaoment.partner
-- Type definitions for lua-language-server (LuaCATS) of endaoment.partner: the
-- client, its options, every call, results, meta and errors. Definitions only;
-- nothing here runs. Point lua-language-server at this directory with
-- .luarc.json: { "workspace.library": ["/path/to/endaoment-partner/types"] }.
-- docs/api.md is the reference these follow.

---@class endaoment.partner
---@field VERSION string the SDK's version ("0.1.0"; core.version)
---@field null lightuserdata JSON null in answers and bodies (the same value as cjson.null)
---@field array_mt table set on an empty table to send [] instead of {}
---@field Error table the metatable of error objects
---@field ENVIRONMENTS table<"production"|"staging"|"dev", string> environment -> base URL
---@field OPERATIONS table<string, table> operation name -> method, path, auth, ... (from the schema)
---@field DEFAULT_KEY_NAMESPACE string the default key_namespace
---@field schema table endaoment.partner.schema: the API contract (fields, rules, operations)
---@field enums table<string, string[]> the documented response enums
---@field GRANT_SUBMISSION_STATUS table<string, string> partner.GRANT_SUBMISSION_STATUS.Accepted == "Accepted"
---@field INBOUND_TRANSFER_STATUS table<string, string>
---@field ASYNC_STATUS table<string, string>
---@field EMAIL_VERIFICATION_STATUS table<string, string>
---@field FUND_TYPE table<string, string>
local partner = {}

---A client. Raises on a bad option (unknown name, wrong type, unsafe header value, missing target):
---there is no default environment, so nothing reaches production by accident.
---@param opts endaoment.partner.Options
---@return endaoment.partner.Client
function partner.new(opts) end

---A random UUID v4 (libuuid).
---@return string
function partner.uuid4() end

---Whether s is a UUID string.
---@param s any
---@return boolean
function partner.is_uuid(s) end

---Whether v is JSON null in an answer (cjson.null is truthy in Lua).
---@param v any
---@return boolean
function partner.is_null(v) end

---A partner identifier trimmed and checked (16-64 printable ASCII characters).
---@param s any
---@return string|nil id
---@return string|nil message
function partner.partner_identifier(s) end

---"125.50" -> "125500000" (at most 6 decimals).
---@param dollars string|integer
---@return string|nil micro
---@return string|nil message
function partner.dollars_to_micro(dollars) end

---"125500000" -> "125.50".
---@param micro string|integer
---@return string|nil dollars
---@return string|nil message
function partner.micro_to_dollars(micro) end

---Exactly the checks a call runs on its body, without sending anything.
---@param op string an operation with a body, e.g. "submit_grant"
---@param body table
---@param opts? { strict?: boolean }
---@return true|nil ok
---@return endaoment.partner.Error|{ warnings: string[] }|nil err_or_info
function partner.validate(op, body, opts) end

---@alias endaoment.partner.ErrorKind
---| "invalid" # your input broke a rule; nothing was sent
---| "config"  # the client or call is misconfigured (missing token, closed client, bad store)
---| "http"    # the API answered non-2xx: status, messages, retryable
---| "network" # the connection failed (too_large: the answer was over max_response_bytes)
---| "timeout" # no answer in time: retry with the same key, never a new one
---| "tls"     # certificate verification failed
---| "decode"  # a 2xx whose body is not JSON
---| "oom"     # out of memory
---| "busy"    # a journey another worker holds (journeys and stores)

---An error: tostring(err) reads "endaoment.partner: <kind>: <message> (field f) [HTTP n]".
---@class endaoment.partner.Error
---@field kind endaoment.partner.ErrorKind
---@field message string
---@field field? string the input field at fault, e.g. "grants[2].amountMicroDollars"
---@field status? integer the HTTP status (kind "http", "decode")
---@field messages? string[] the API's validation messages (kind "http")
---@field retryable? boolean whether resending with the same key may succeed (endaoment.partner.retry's table)
---@field body? string the answer's body, truncated (kind "http", "decode")
---@field request_id? string the answer's x-request-id
---@field curl_code? integer libcurl's error code (network, timeout, tls)
---@field too_large? boolean the answer was over max_response_bytes (kind "network")
---@field conflict? boolean a 409: the natural id was used before for another payload
---@field rejected? boolean journeys: the API refused the step, nothing was created (fix it, run again)
---@field step? string journeys: the step that failed, e.g. "donations[2]"

---What a call did, on success and on failure.
---@class endaoment.partner.Meta
---@field status? integer the HTTP status of the last attempt
---@field headers? table<string, string> the answer's headers (names lower-case)
---@field attempts integer times the request went on the wire, libcurl's own resends included (0: nothing was sent)
---@field http_version? "1.0"|"1.1"|"2"|"3" the HTTP version of the answer
---@field idempotency_key? string keyed writes: the key sent (resend with it to learn the outcome)
---@field idempotency_key_source? "given"|"derived"|"random"
---@field natural_id? { field: string, value: string } the id a derived key came from
---@field elapsed_ms? number wall time of the call, retries included
---@field request_id? string the answer's x-request-id
---@field warnings? string[] rules the docs leave open that the body breaks (sent anyway unless strict)

---@class endaoment.partner.Options
---@field api_key? string sent as x-api-key (required unless bearer_token)
---@field environment? "production"|"staging"|"dev" or base_url; one of them is required
---@field base_url? string https://..., or http:// to a loopback address (the sandbox)
---@field bearer_token? string for async grants and OIDC fund creation
---@field timeout_ms? integer whole request, per attempt (30000)
---@field connect_timeout_ms? integer connection set-up (10000)
---@field max_retries? integer retries after the first attempt (2)
---@field retry_base_ms? integer backoff base (500)
---@field retry_cap_ms? integer backoff cap (8000)
---@field retry_after_cap_ms? integer longest Retry-After honoured (30000)
---@field max_response_bytes? integer larger answers are refused (8 MiB)
---@field strict? boolean refuse unknown body fields and guessed rules instead of sending
---@field ca_file? string PEM file of trusted CAs (libcurl; under nginx use lua_ssl_trusted_certificate)
---@field proxy? string libcurl: proxy URL (http://, https://, socks5h://...); "" for none; default: https_proxy / all_proxy from the environment
---@field no_proxy? string libcurl: hosts reached without the proxy (comma-separated; default: no_proxy from the environment)
---@field transport? "auto"|"curl"|"ngx"|"resty_http"|endaoment.partner.Transport
---@field user_agent? string
---@field random? fun(m: integer, n: integer): integer the jitter's random source (tests)
---@field on_retry? fun(info: { attempt: integer, wait_ms: number, status?: integer, err?: endaoment.partner.Error, resent?: boolean }) resent: libcurl already sent it again (reported after the fact)
---@field max_connections? integer async: transfers at once, 1-512 (16)
---@field on_error? fun(err: any, info: { call: string, idempotency_key?: string, handle?: endaoment.partner.Handle, where: string }) an error raised by an async callback
---@field key_namespace? string a UUID mixed into every derived idempotency key
---@field derive_keys? boolean false: keyless writes get a random key (true)

---Options of one call.
---@class endaoment.partner.CallOptions
---@field user_id? string the acting user's Endaoment UUID (x-endaoment-user-id): create_fund, pledges
---@field bearer_token? string a Bearer token for this call
---@field idempotency_key? string keyed writes: this key instead of a derived one
---@field timeout_ms? integer this call's timeout, per attempt
---@field headers? table<string, string> extra headers (validated)

---@class endaoment.partner.RequestOptions: endaoment.partner.CallOptions
---@field auth? "key"|"bearer"|"key_or_bearer"|"none" the credential sent ("key")
---@field idempotent? boolean allow retries of a write to an endpoint the SDK does not know

---A search's query (search_orgs: searchTerm required, count <= 100; search_subprojects: count <= 25).
---@class endaoment.partner.SearchQuery: endaoment.partner.PageQuery
---@field searchTerm? string

---@class endaoment.partner.PageQuery
---@field count? integer items per page
---@field offset? integer items to skip

---A custom transport: any table with request(); sleep and close are optional.
---@class endaoment.partner.Transport
---@field request fun(self: endaoment.partner.Transport, req: endaoment.partner.TransportRequest): endaoment.partner.TransportResponse|nil, endaoment.partner.TransportError|nil
---@field sleep? fun(self: endaoment.partner.Transport, ms: number)
---@field close? fun(self: endaoment.partner.Transport)
---@field name? string
---@field version? string

---@class endaoment.partner.TransportRequest
---@field method string
---@field url string
---@field headers table<string, string>
---@field body? string
---@field timeout_ms integer
---@field connect_timeout_ms integer
---@field retry_safe? boolean false: a write that must never be sent twice (a fresh connection, one send at most)
---@field max_sends? integer most times on the wire in this exchange, libcurl's own resends included

---@class endaoment.partner.TransportResponse
---@field status integer
---@field headers table<string, string> names lower-case
---@field body string
---@field reused? boolean the connection was reused (libcurl)
---@field elapsed_ms? number
---@field sends? integer times the request went on the wire (libcurl resends on a dead reused connection)
---@field http_version? string "1.1", "2", ...

---@class endaoment.partner.TransportError
---@field kind "network"|"timeout"|"tls"|"too_large"|"config"|"oom"|"unknown"
---@field message string
---@field retryable? boolean only a custom transport sets it: otherwise endaoment.partner.retry decides by kind
---@field curl_code? integer
---@field elapsed_ms? number
---@field sends? integer times the request went on the wire before it failed

-- Request bodies (API field names; docs/api.md). Money fields are micro-dollars: a string of
-- digits ("125000000") or, on Lua 5.3+, an integer. Unknown fields are forwarded unless strict.

---@class endaoment.partner.body.address
---@field line1 string
---@field line2? string
---@field city string
---@field state? string
---@field zip? string
---@field country string ISO 3166-1 alpha-3, e.g. "USA"

---@class endaoment.partner.body.provision_user
---@field partnerUserIdentifier string 16-64 printable ASCII characters, your id for the user
---@field firstName string
---@field lastName string
---@field email string
---@field address endaoment.partner.body.address

---@class endaoment.partner.body.create_fund
---@field name string
---@field partnerAccountIdentifier string 16-64 printable ASCII characters, your id for the account
---@field description? string
---@field type? "Private"|"Transparent"
---@field partnerUserIdentifier? string the acting user, instead of opts.user_id

---@class endaoment.partner.body.cash_pledge
---@field receivingFundId string the fund's UUID
---@field pledgedAmountMicroDollars string|integer
---@field partnerOperationId string your ledger id (at most 36 characters): the key is derived from it
---@field partnerUserIdentifier? string
---@field idempotencyKey? string

---@class endaoment.partner.body.stock_lot
---@field numberOfShares number
---@field purchasePrice number dollars, the API's one dollar-number field
---@field purchaseDate string ISO-8601 UTC
---@field employeeStockPlan? string
---@field lotId? string

---@class endaoment.partner.body.stock_data
---@field ticker string
---@field shares number
---@field lots? endaoment.partner.body.stock_lot[]

---@class endaoment.partner.body.stock_pledge
---@field receivingFundId string
---@field donationValueMicroDollars string|integer
---@field partnerOperationId string
---@field partnerUserIdentifier? string
---@field idempotencyKey? string
---@field stockPledgeData endaoment.partner.body.stock_data

---@class endaoment.partner.body.inbound_transfer
---@field amountMicroDollars string|integer
---@field partnerFundingTransferId string your transfer id: the key is derived from it
---@field sourcePartnerAccountIdentifier string
---@field destinationPartnerAccountIdentifier string
---@field settledAtUtc string ISO-8601 UTC

---@class endaoment.partner.body.settled_grant
---@field amountMicroDollars string|integer
---@field destinationOrgId? string
---@field destinationSubprojectId? string
---@field specialInstructions? string
---@field hideMyInfoFromOrg? boolean

---@class endaoment.partner.body.grant_submission
---@field originFundId string
---@field inboundCustodianTransfer endaoment.partner.body.inbound_transfer
---@field grants endaoment.partner.body.settled_grant[] 1 to 50
---@field idempotencyKey? string

---@class endaoment.partner.body.async_grant
---@field originFundId string
---@field destinationOrgId string
---@field destinationSubprojectId? string
---@field requestedAmount string|integer micro-dollars
---@field purpose string at most 511 characters
---@field recommender? string
---@field specialInstructions? string
---@field shareMyEmail? boolean
---@field recommendationIds? string[]
---@field idempotencyKey? string

---Not public: forwarded as sent (name, ein, website, ...).
---@class endaoment.partner.body.missing_org_report
---@field name? string
---@field ein? string
---@field website? string
---@field [string] any

-- Answers (the decoded JSON; the fields the docs show, others may be present).

---@class endaoment.partner.User
---@field id string
---@field partnerUserIdentifier string
---@field email string
---@field firstName? string
---@field lastName? string
---@field emailVerificationStatus? "PENDING"|"VERIFIED"
---@field techPlatformClientId? string
---@field [string] any

---@class endaoment.partner.Fund
---@field id string
---@field name string
---@field type? string
---@field description? string
---@field usdcBalance string micro-dollars
---@field lifetimeDonationsUsdc? string
---@field totalGrantedUsdc? string
---@field grantCount? integer
---@field partnerAccountIdentifier? string
---@field createdAtUtc? string
---@field updatedAtUtc? string
---@field [string] any

---@class endaoment.partner.Pledge
---@field id string
---@field [string] any

---@class endaoment.partner.GrantSubmission
---@field id string
---@field status string one of partner.GRANT_SUBMISSION_STATUS
---@field originFundId? string
---@field inboundCustodianTransfer? table
---@field grants? { asyncGrantTransferId: string, amountMicroDollars: string }[]
---@field [string] any

---@class endaoment.partner.MissingOrgReport
---@field id string
---@field [string] any

---@class endaoment.partner.AsyncGrant
---@field id string
---@field asyncStatus? string one of partner.ASYNC_STATUS
---@field [string] any

---@class endaoment.partner.Grant
---@field id string
---@field [string] any

---@class endaoment.partner.Org
---@field id string
---@field ein? string
---@field name string
---@field [string] any

---@class endaoment.partner.Subproject
---@field id string
---@field name string
---@field [string] any

---@class endaoment.partner.Activity
---@field [string] any

---@class endaoment.partner.Whoami
---@field [string] any

---An async call in flight.
---@class endaoment.partner.Handle
---@field call string the call's name, e.g. "submit_grant"
---@field idempotency_key? string resend the same body with it to learn the outcome after cancel()
local Handle = {}

---True once its callback has run or it was cancelled.
---@return boolean
function Handle:done() end

---Stops waiting (the callback is never called); what was sent may have been processed.
---@return boolean cancelled true if it stopped a pending request
function Handle:cancel() end

---A pager from client:each(): call it for the next item (nil at the end); a failed page ends the
---loop and leaves the error in .err.
---@class endaoment.partner.Pager
---@field err? endaoment.partner.Error
---@field meta? endaoment.partner.Meta the last page's meta
---@field pages integer pages read
---@field count integer items returned
---@overload fun(): any

---A client: holds no socket between requests under nginx; one per thread elsewhere.
---@class endaoment.partner.Client
---@field base_url string
---@field environment? string
---@field user_agent string
---@field key_namespace string
---@field derive_keys boolean
local Client = {}

---The idempotency key the client derives for op from natural_id (your own ledger id): a strict
---UUID v4, the same in every process and language (docs/derived-keys.md).
---@param op string e.g. "record_cash_donation"
---@param natural_id string
---@return string|nil key
---@return endaoment.partner.Error|nil err kind "invalid"
function Client:derive_key(op, natural_id) end

---Closes the transport; also cancels every async request (no callback runs afterwards).
function Client:close() end

---Escape hatch for endpoints not wrapped yet. A write is retried only when opts.idempotent or the
---body carries an idempotencyKey (otherwise only on 429).
---@param method string upper-case, e.g. "GET"
---@param path string starting with /
---@param body? table|string a table (encoded), a JSON string, or nil
---@param opts? endaoment.partner.RequestOptions
---@return any result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:request(method, path, body, opts) end

---The async twin of `client:request`.
---@param method string
---@param path string
---@param body? table|string
---@param opts? endaoment.partner.RequestOptions
---@param callback fun(result: any, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@return endaoment.partner.Handle|nil handle
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, method: string, path: string, callback: fun(result: any, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
---@overload fun(self: endaoment.partner.Client, method: string, path: string, body: table|string|nil, callback: fun(result: any, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:request_async(method, path, body, opts, callback) end

---Pages through a list operation ("search_orgs", "search_subprojects", "fund_activity") by count
---and offset until a short page. Path parameters come first: client:each("fund_activity", id, query).
---@param op string
---@param ... any path parameters, then the query table, then call options
---@return endaoment.partner.Pager
function Client:each(op, ...) end

---Never blocks (with ms nil or 0): starts due retries, moves bytes, runs finished callbacks.
---poll(ms) with ms > 0 is wait(ms).
---@param ms? number
---@return integer ran callbacks run
function Client:poll(ms) end

---Blocks up to ms (nil: no limit) until at least one callback has run or nothing is pending.
---@param ms? number
---@return integer ran
function Client:wait(ms) end

---Async requests neither completed nor cancelled, including those waiting for a retry.
---@return integer
function Client:pending() end

---The sockets to watch; each entry has :getfd() for luasocket's socket.select.
---@return { fd: integer, read: boolean, write: boolean, getfd: fun(self): integer }[]
function Client:fds() end

---How long a host may wait on fds() before calling poll(0): 0 now, -1 nothing pending.
---@return number ms
function Client:timeout_ms() end

---libcurl's socket interface: what to watch, changed since the last call, in order. want "r", "w" or
---"rw" (watch for that, replacing what was asked before) or "remove" (stop: the socket may be closed,
---and its number may come back as a new socket). Read it after every call into the client.
---@return { fd: integer, want: "r"|"w"|"rw"|"remove" }[]
function Client:socket_changes() end

---libcurl's socket interface: milliseconds until socket_action() with no socket is due (0 now),
----1 when no timer is needed.
---@return number ms
function Client:timer_ms() end

---libcurl's socket interface: fd is ready for events ("r", "w", "rw"; "e" an error), or, with no
---fd, the timer is due. Moves bytes, starts due retries, runs callbacks; never blocks.
---@param fd? integer
---@param events? string
---@return integer ran callbacks run
function Client:socket_action(fd, events) end

---Provisions a user (idempotent on partnerUserIdentifier: 201, then 200).
---`POST /v1/auth/partner/users`
---@param body endaoment.partner.body.provision_user
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.User|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:provision_user(body, opts) end

---The async twin of `client:provision_user`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param body endaoment.partner.body.provision_user
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.User
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, body: endaoment.partner.body.provision_user, callback: endaoment.partner.callback.User): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:provision_user_async(body, opts, callback) end

---Creates a partner-managed donor-advised fund, acting as opts.user_id (idempotent on partnerAccountIdentifier).
---`POST /v1/funds/partner`
---@param body endaoment.partner.body.create_fund
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Fund|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:create_fund(body, opts) end

---The async twin of `client:create_fund`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param body endaoment.partner.body.create_fund
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.Fund
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, body: endaoment.partner.body.create_fund, callback: endaoment.partner.callback.Fund): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:create_fund_async(body, opts, callback) end

---Records a cash donation that already settled on the partner's side; the key is derived from partnerOperationId.
---`POST /v1/donation-pledges/partner/cash-settled`
---@param body endaoment.partner.body.cash_pledge
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Pledge|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:record_cash_donation(body, opts) end

---The async twin of `client:record_cash_donation`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param body endaoment.partner.body.cash_pledge
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.Pledge
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, body: endaoment.partner.body.cash_pledge, callback: endaoment.partner.callback.Pledge): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:record_cash_donation_async(body, opts, callback) end

---Records a settled stock donation with its lots; the key is derived from partnerOperationId.
---`POST /v1/donation-pledges/partner/stock-settled`
---@param body endaoment.partner.body.stock_pledge
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Pledge|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:record_stock_donation(body, opts) end

---The async twin of `client:record_stock_donation`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param body endaoment.partner.body.stock_pledge
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.Pledge
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, body: endaoment.partner.body.stock_pledge, callback: endaoment.partner.callback.Pledge): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:record_stock_donation_async(body, opts, callback) end

---Submits grants once the custodian transfer has settled; the key is derived from inboundCustodianTransfer.partnerFundingTransferId.
---`POST /v1/transfers/partner/grant-submissions`
---@param body endaoment.partner.body.grant_submission
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.GrantSubmission|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:submit_grant(body, opts) end

---The async twin of `client:submit_grant`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param body endaoment.partner.body.grant_submission
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.GrantSubmission
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, body: endaoment.partner.body.grant_submission, callback: endaoment.partner.callback.GrantSubmission): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:submit_grant_async(body, opts, callback) end

---Reports a nonprofit Endaoment does not know yet (retried only on 429).
---`POST /v1/missing-org-reports/tech-platform`
---@param body endaoment.partner.body.missing_org_report
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.MissingOrgReport|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:report_missing_org(body, opts) end

---The async twin of `client:report_missing_org`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param body endaoment.partner.body.missing_org_report
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.MissingOrgReport
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, body: endaoment.partner.body.missing_org_report, callback: endaoment.partner.callback.MissingOrgReport): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:report_missing_org_async(body, opts, callback) end

---Creates an OAuth async grant (needs a Bearer token: new{bearer_token=} or opts.bearer_token).
---`POST /v1/transfers/async-grants`
---@param body endaoment.partner.body.async_grant
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.AsyncGrant|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:create_async_grant(body, opts) end

---The async twin of `client:create_async_grant`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param body endaoment.partner.body.async_grant
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.AsyncGrant
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, body: endaoment.partner.body.async_grant, callback: endaoment.partner.callback.AsyncGrant): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:create_async_grant_async(body, opts, callback) end

---Cancels a pending async grant (no idempotency key: retried only on 429).
---`POST /v1/transfers/async-grants/{id}/cancel`
---@param id string the async grant's UUID
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.AsyncGrant|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:cancel_async_grant(id, opts) end

---The async twin of `client:cancel_async_grant`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param id string the async grant's UUID
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.AsyncGrant
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, id: string, callback: endaoment.partner.callback.AsyncGrant): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:cancel_async_grant_async(id, opts, callback) end

---Reads a fund.
---`GET /v1/funds/{id}`
---@param id string the fund's UUID
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Fund|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:get_fund(id, opts) end

---The async twin of `client:get_fund`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param id string the fund's UUID
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.Fund
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, id: string, callback: endaoment.partner.callback.Fund): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:get_fund_async(id, opts, callback) end

---Lists a fund's grants.
---`GET /v1/transfers/grants/fund/{id}`
---@param id string the fund's UUID
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Grant[]|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:list_fund_grants(id, opts) end

---The async twin of `client:list_fund_grants`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param id string the fund's UUID
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.GrantList
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, id: string, callback: endaoment.partner.callback.GrantList): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:list_fund_grants_async(id, opts, callback) end

---Finds a nonprofit by EIN (public: no key is sent).
---`GET /v1/orgs/ein/{ein}`
---@param ein string 9 digits, with or without a hyphen after the second
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Org|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:find_org_by_ein(ein, opts) end

---The async twin of `client:find_org_by_ein`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param ein string 9 digits, with or without a hyphen after the second
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.Org
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, ein: string, callback: endaoment.partner.callback.Org): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:find_org_by_ein_async(ein, opts, callback) end

---Searches nonprofits, one page (client:each("search_orgs", query) pages through them).
---`GET /v2/orgs/search`
---@param query endaoment.partner.SearchQuery searchTerm required; count at most 100
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Org[]|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:search_orgs(query, opts) end

---The async twin of `client:search_orgs`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param query endaoment.partner.SearchQuery searchTerm required; count at most 100
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.OrgList
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, query: endaoment.partner.SearchQuery, callback: endaoment.partner.callback.OrgList): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:search_orgs_async(query, opts, callback) end

---Searches subprojects, one page (client:each("search_subprojects", query) pages through them).
---`GET /v1/subprojects/search`
---@param query? endaoment.partner.SearchQuery
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Subproject[]|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:search_subprojects(query, opts) end

---The async twin of `client:search_subprojects`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param query? endaoment.partner.SearchQuery
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.SubprojectList
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, callback: endaoment.partner.callback.SubprojectList): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
---@overload fun(self: endaoment.partner.Client, query: endaoment.partner.SearchQuery, callback: endaoment.partner.callback.SubprojectList): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:search_subprojects_async(query, opts, callback) end

---A fund's activity, one page (client:each("fund_activity", id, query) pages through it).
---`GET /v1/activity/fund/{id}`
---@param id string the fund's UUID
---@param query? endaoment.partner.PageQuery
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Activity[]|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:fund_activity(id, query, opts) end

---The async twin of `client:fund_activity`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param id string the fund's UUID
---@param query? endaoment.partner.PageQuery
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.ActivityList
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, id: string, callback: endaoment.partner.callback.ActivityList): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
---@overload fun(self: endaoment.partner.Client, id: string, query: endaoment.partner.PageQuery, callback: endaoment.partner.callback.ActivityList): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:fund_activity_async(id, query, opts, callback) end

---Who the credentials belong to.
---`GET /v1/auth/whoami`
---@param opts? endaoment.partner.CallOptions
---@return endaoment.partner.Whoami|nil result the decoded answer
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta meta
function Client:whoami(opts) end

---The async twin of `client:whoami`: returns at once; callback(result, err, meta) runs inside
---poll/wait with exactly what the blocking call returns. Trailing optional arguments may be
---left out: the callback is always the last argument.
---@param opts? endaoment.partner.CallOptions
---@param callback endaoment.partner.callback.Whoami
---@return endaoment.partner.Handle|nil handle nil when nothing was sent (the callback never runs)
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.Meta|nil meta
---@overload fun(self: endaoment.partner.Client, callback: endaoment.partner.callback.Whoami): endaoment.partner.Handle|nil, endaoment.partner.Error|nil, endaoment.partner.Meta|nil
function Client:whoami_async(opts, callback) end

---@alias endaoment.partner.callback.ActivityList fun(result: endaoment.partner.Activity[]|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.AsyncGrant fun(result: endaoment.partner.AsyncGrant|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.Fund fun(result: endaoment.partner.Fund|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.GrantList fun(result: endaoment.partner.Grant[]|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.GrantSubmission fun(result: endaoment.partner.GrantSubmission|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.MissingOrgReport fun(result: endaoment.partner.MissingOrgReport|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.Org fun(result: endaoment.partner.Org|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.OrgList fun(result: endaoment.partner.Org[]|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.Pledge fun(result: endaoment.partner.Pledge|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.SubprojectList fun(result: endaoment.partner.Subproject[]|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.User fun(result: endaoment.partner.User|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)
---@alias endaoment.partner.callback.Whoami fun(result: endaoment.partner.Whoami|nil, err: endaoment.partner.Error|nil, meta: endaoment.partner.Meta)

return partner
