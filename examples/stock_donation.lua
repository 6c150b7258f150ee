-- Record a settled stock donation with its tax lots.
--
-- Run it from anywhere, with the SDK on the package paths (in a checkout: make, then
-- eval "$(make -s env)"; or installed with LuaRocks), against a sandbox started first
-- (bin/endaoment-sandbox --port 8787):
--
--   lua5.4 examples/stock_donation.lua http://127.0.0.1:8787
local partner = require "endaoment.partner"
local client = partner.new { api_key = "sandbox-key", base_url = arg[1] or "http://127.0.0.1:8787" }

local user = assert(client:provision_user {
  partnerUserIdentifier = "stock-donor-00000001", firstName = "Grace", lastName = "Hopper",
  email = "grace@example.com", address = { line1 = "2 Navy Way", city = "Arlington",
      state = "VA", zip = "22202", country = "USA" },
})
local fund = assert(client:create_fund(
  { name = "Hopper DAF", partnerAccountIdentifier = "stock-account-000001" }, { user_id = user.id }))

-- donationValueMicroDollars is the settled value in micro-dollars (a string, or a Lua
-- integer on 5.3+); purchasePrice is the one money field the API takes as a JSON number
-- of dollars, as its docs show.
local pledge, err, meta = client:record_stock_donation({
  receivingFundId = fund.id,
  donationValueMicroDollars = partner.dollars_to_micro("15075.00"),
  partnerOperationId = "broker-txn-778899",
  stockPledgeData = {
    ticker = "AAPL", shares = 100,
    lots = {
      { numberOfShares = 50, purchasePrice = 150.75, purchaseDate = "2023-01-15T00:00:00.000Z",
        employeeStockPlan = "RSU", lotId = "LOT123" },
      { numberOfShares = 50, purchasePrice = 120.10, purchaseDate = "2022-06-01T00:00:00.000Z", lotId = "LOT124" },
    },
  },
}, { user_id = user.id })
if not pledge then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
-- The key is derived from partnerOperationId: a second run of this script replays the pledge.
print("stock pledge", pledge.id, "key", meta.idempotency_key)
print("fund balance", partner.micro_to_dollars(assert(client:get_fund(fund.id)).usdcBalance), "USD")
client:close()
