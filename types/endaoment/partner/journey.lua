---@meta endaoment.partner.journey
-- Type definitions for lua-language-server (LuaCATS) of endaoment.partner.journey:
-- the five partner steps as one resumable, exactly-once run, and batches of runs.
-- Definitions only; nothing here runs. docs/journeys.md is the guide.

---@class endaoment.partner.journey
---@field FORMAT string the state document's format, "endaoment-journey/1"
local journey = {}

---A journey plan: each part is the call's body; any part may be absent. Ids flow forward (the
---user is the acting user, the fund fills receivingFundId and originFundId).
---@class endaoment.partner.journey.Plan
---@field user? endaoment.partner.body.provision_user
---@field fund? endaoment.partner.body.create_fund
---@field donations? endaoment.partner.journey.Donation[]
---@field grant? endaoment.partner.body.grant_submission originFundId may be left out
---@field missing_orgs? endaoment.partner.body.missing_org_report[]
---@field user_id? string an existing user's UUID, instead of user
---@field fund_id? string an existing fund's UUID, instead of fund

---A donation of a plan: a cash or stock pledge body (receivingFundId may be left out) and its kind.
---@class endaoment.partner.journey.Donation: endaoment.partner.body.cash_pledge, endaoment.partner.body.stock_pledge
---@field kind "cash"|"stock"

---@class endaoment.partner.journey.RunOptions
---@field store? string|endaoment.partner.store.Store "file:PATH", "sqlite:PATH", "postgres://..." or a store object
---@field state_file? string the same as store = "file:" .. state_file
---@field on_step? fun(info: endaoment.partner.journey.StepInfo)
---@field rebind? string move a saved journey to this base URL (loopback to loopback only)

---@class endaoment.partner.journey.StepInfo
---@field n integer this step's number in this run
---@field total integer steps in this run
---@field id string "user", "fund", "donations[1]", "grant", "missing_orgs[1]"
---@field name string the call, e.g. "record_cash_donation"
---@field outcome "created"|"existing"|"replayed"|"skipped"|"failed"|"ok"
---@field result_id? string
---@field elapsed_ms? number
---@field status? integer
---@field idempotency_key? string
---@field idempotency_key_source? "given"|"derived"|"random"
---@field error? endaoment.partner.Error

---@class endaoment.partner.journey.Result
---@field journey_id string
---@field user? endaoment.partner.User
---@field fund? endaoment.partner.Fund
---@field donations endaoment.partner.Pledge[]
---@field grant? endaoment.partner.GrantSubmission
---@field missing_orgs endaoment.partner.MissingOrgReport[]
---@field steps endaoment.partner.journey.StepInfo[]

---@class endaoment.partner.journey.ManyOptions
---@field store string|endaoment.partner.store.Store a store that holds many journeys (sqlite:, postgres://)
---@field state_file? string
---@field concurrency? integer journeys in flight at once (8)
---@field total? integer the number of plans, for on_progress's ETA
---@field on_progress? fun(p: endaoment.partner.journey.Progress)
---@field on_result? fun(r: endaoment.partner.journey.JourneyResult)
---@field on_step? fun(info: endaoment.partner.journey.StepInfo, index: integer)
---@field rebind? string
---@field busy_retry_ms? integer wait before retrying a journey another worker holds, ms (100)

---@class endaoment.partner.journey.Progress
---@field finished integer
---@field done integer
---@field skipped integer
---@field failed integer
---@field in_flight integer
---@field waiting integer
---@field total? integer
---@field rate number journeys per second
---@field eta_s? number
---@field elapsed_s number
---@field final boolean

---One journey of a batch.
---@class endaoment.partner.journey.JourneyResult
---@field index integer the plan's position
---@field line? any the plan iterator's third value (batch_file: the line number)
---@field journey_id string
---@field ok boolean
---@field outcome "done"|"skipped"|"invalid"|"rejected"|"failed"
---@field user_id? string
---@field fund_id? string
---@field donation_ids string[]
---@field grant_id? string
---@field error? endaoment.partner.Error
---@field error_kind? endaoment.partner.ErrorKind
---@field step? string
---@field advice? string what to do (never re-sends money under a new key)

---@class endaoment.partner.journey.Summary
---@field total integer
---@field done integer
---@field skipped integer already done before this run
---@field failed integer
---@field invalid integer
---@field rejected integer
---@field busy_waits integer
---@field elapsed_ms number

---Runs one plan: validated whole before the first request; finished steps are skipped, the
---unfinished one re-sent with the same key. On failure: nil, err (err.rejected tells a refused
---step from an unknown outcome) and what was done so far.
---@param client endaoment.partner.Client
---@param plan endaoment.partner.journey.Plan
---@param opts? endaoment.partner.journey.RunOptions
---@return endaoment.partner.journey.Result|nil result
---@return endaoment.partner.Error|nil err
---@return endaoment.partner.journey.Result|nil partial
function journey.run(client, plan, opts) end

---Runs many plans over the async client with group-committed saves and cross-worker claims.
---@param client endaoment.partner.Client
---@param plans endaoment.partner.journey.Plan[]|fun(): endaoment.partner.journey.Plan|nil a list or an iterator
---@param opts endaoment.partner.journey.ManyOptions
---@return endaoment.partner.journey.Summary|nil summary
---@return endaoment.partner.Error|nil err the batch could not start
function journey.run_many(client, plans, opts) end

---@class endaoment.partner.journey.BatchFileOptions
---@field order? "spread"|"file" spread (default): blocks in an order of this process's own
---@field block? integer plans per block (16)

---Reads and checks a JSONL batch (one plan per line). On a bad file: nil, err with err.lines
---("PATH:N: why", up to 20) and err.bad (how many).
---@param path string
---@param opts? endaoment.partner.journey.BatchFileOptions
---@return (fun(): endaoment.partner.journey.Plan|false|nil, endaoment.partner.Error|nil, integer|nil)|nil iterator for run_many
---@return integer|endaoment.partner.Error count the number of plans, or the error
function journey.batch_file(path, opts) end

---The plan checks alone (err.field like "donations[2].donationValueMicroDollars").
---@param plan any
---@return true|nil ok
---@return endaoment.partner.Error|nil err kind "invalid"
function journey.validate(plan) end

---The journey's id in a store: "user:<partnerUserIdentifier>", "user_id:...", "fund_id:...",
---"account:..." or "plan:<sha256>".
---@param plan endaoment.partner.journey.Plan
---@return string
function journey.journey_id(plan) end

---What to do about a failure, in one sentence; never advises re-sending money under a new key.
---@param err endaoment.partner.Error|any
---@return string
function journey.advice(err) end

return journey
