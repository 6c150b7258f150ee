#!/bin/sh
# make demo: starts the sandbox on a free loopback port and walks the five
# partner journey steps against it, printing each answer. Stops the sandbox
# on exit, whatever happens.
set -eu
LUA=${LUA:-lua5.4}
out=$(mktemp -d)
"$LUA" bin/endaoment-sandbox --port 0 >"$out/url" 2>"$out/err" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$out"' EXIT INT TERM
i=0
while [ ! -s "$out/url" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
url=$(head -n 1 "$out/url")
[ -n "$url" ] || { cat "$out/err" >&2; exit 1; }
echo "sandbox at $url"

step() { # n, name, method, path, body, extra header
  code=$(curl -s -o "$out/body" -w '%{http_code}' -X "$3" "$url$4" \
    -H 'x-api-key: sandbox-key' -H 'content-type: application/json' ${6:+-H "$6"} \
    ${5:+--data-binary "$5"})
  printf 'step %s/5 %-22s HTTP %s  %s\n' "$1" "$2" "$code" "$(head -c 160 "$out/body")"
  case "$code" in 2??) ;; *) exit 1 ;; esac
}
field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$out/body"; }

step 1 provision_user POST /v1/auth/partner/users \
  '{"partnerUserIdentifier":"demo-user-000000001","firstName":"Ada","lastName":"Lovelace","email":"ada@example.com","address":{"line1":"1 Main St","city":"New York","state":"NY","zip":"10001","country":"USA"}}'
user=$(field id)
step 2 create_fund POST /v1/funds/partner \
  '{"name":"Lovelace Family DAF","partnerAccountIdentifier":"demo-account-00000001","type":"Private"}' \
  "x-endaoment-user-id: $user"
fund=$(field id)
step 3 record_cash_donation POST /v1/donation-pledges/partner/cash-settled \
  "{\"receivingFundId\":\"$fund\",\"idempotencyKey\":\"6f1c2a7e-3d4b-4c5a-9e8f-0a1b2c3d4e5f\",\"pledgedAmountMicroDollars\":\"125000000\",\"partnerOperationId\":\"demo-op-1\"}" \
  "x-endaoment-user-id: $user"
step 4 submit_grant POST /v1/transfers/partner/grant-submissions \
  "{\"idempotencyKey\":\"8fc9cf75-7813-4f2f-95d6-7c9f84f0f6ef\",\"originFundId\":\"$fund\",\"inboundCustodianTransfer\":{\"amountMicroDollars\":\"125000000\",\"partnerFundingTransferId\":\"demo-journal-1\",\"sourcePartnerAccountIdentifier\":\"demo-omnibus-00000001\",\"destinationPartnerAccountIdentifier\":\"demo-account-00000001\",\"settledAtUtc\":\"2026-05-04T14:32:01.000Z\"},\"grants\":[{\"amountMicroDollars\":\"100000000\",\"destinationOrgId\":\"5b6e6b8e-3f0a-4c47-9a51-000000000001\"}]}"
step 5 report_missing_org POST /v1/missing-org-reports/tech-platform \
  '{"name":"Tiny Food Bank","ein":"12-3456789","website":"https://tiny-food-bank.example"}'
echo "done: all five steps answered 2xx"
