-- The five partner steps by hand.
--
-- Run it from anywhere, with the SDK on the package paths (in a checkout: make, then
-- eval "$(make -s env)"; or installed with LuaRocks), against a sandbox started first
-- (bin/endaoment-sandbox --port 8787):
--
--   lua5.4 examples/journey.lua http://127.0.0.1:8787
local partner = require "endaoment.partner"
local client = partner.new { api_key = "sandbox-key", base_url = arg[1] or "http://127.0.0.1:8787" }

-- 1. Provision the user (idempotent on partnerUserIdentifier: 201, then 200).
local user = assert(client:provision_user {
  partnerUserIdentifier = "example-user-0000001", firstName = "Ada", lastName = "Lovelace",
  email = "ada@example.com", address = { line1 = "1 Main St", city = "New York",
      state = "NY", zip = "10001", country = "USA" },
})
-- 2. Create the fund, acting as that user (idempotent on partnerAccountIdentifier).
local fund = assert(client:create_fund(
  { name = "Lovelace Family DAF", partnerAccountIdentifier = "example-account-00001" }, { user_id = user.id }))
-- 3. Record a donation that already settled on our side. Money is micro-dollars, as strings.
local pledge, err, meta = client:record_cash_donation({ receivingFundId = fund.id,
  pledgedAmountMicroDollars = partner.dollars_to_micro("125.00"), partnerOperationId = "ledger-1" },
  { user_id = user.id })
assert(pledge, err)
-- No key given: it is derived from partnerOperationId, so running this script again replays the
-- pledge instead of recording it twice (meta.idempotency_key_source == "derived").
print("pledge", pledge.id, "idempotency key", meta.idempotency_key, meta.idempotency_key_source)
-- 4. Submit the grant once the custodian transfer has settled.
local sub = assert(client:submit_grant {
  originFundId = fund.id,
  inboundCustodianTransfer = { amountMicroDollars = "125000000", partnerFundingTransferId = "journal-1",
    sourcePartnerAccountIdentifier = "omnibus-account-00001",
    destinationPartnerAccountIdentifier = "example-account-00001", settledAtUtc = "2026-05-04T14:32:01.000Z" },
  grants = { { amountMicroDollars = "100000000",
    destinationOrgId = assert(client:find_org_by_ein("53-0196605")).id } },
})
print("grant submission", sub.id, sub.status)
-- 5. Report a nonprofit Endaoment does not know yet.
local report = assert(client:report_missing_org { name = "Tiny Food Bank", ein = "12-3456789" })
print("missing org report", report.id)
client:close()
