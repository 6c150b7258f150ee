#!/bin/sh
# make demo: runs the five-step partner journey in examples/plan.json with
# bin/endaoment-journey. With no ENDAOMENT_* variables set, the journey CLI
# starts the embedded sandbox on a free loopback port and stops it after.
set -eu
LUA=${LUA:-lua5.4}
exec env -u ENDAOMENT_ENV -u ENDAOMENT_BASE_URL -u ENDAOMENT_API_KEY \
  "$LUA" bin/endaoment-journey examples/plan.json
