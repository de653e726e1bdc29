#!/usr/bin/env bash
# API fuzzing: starts `charter serve` from the built binary on a fresh SQLite
# database, runs schemathesis against its /api/openapi.json (every
# operation, admin Basic credentials, a bounded number of examples) and
# stops it. Fails on a 5xx or an answer that does not conform to the schema.
#
#   CHARTER_BIN            the binary [default: $CARGO_TARGET_DIR/debug/charter]
#   SCHEMATHESIS_EXAMPLES  examples per operation [default: 30]
#   SCHEMATHESIS_VENV      where schemathesis is installed [default: .venv-schemathesis]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CHARTER_BIN:-${CARGO_TARGET_DIR:-target}/debug/charter}"
VENV="${SCHEMATHESIS_VENV:-.venv-schemathesis}"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-30}"
[ -x "$BIN" ] || { echo "no charter binary at $BIN (cargo build first)"; exit 1; }
if ! [ -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4.3,<5'
fi

WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
PW="schemathesis-password-1"
CHARTER_ADMIN_PASSWORD="$PW" "$BIN" serve --listen "127.0.0.1:$PORT" \
  --database-url "sqlite://$WORK/charter.db" --keys-dir "$WORK/keys" \
  --push-interval-secs 0 --renew-limit-per-address 0 --renew-limit-per-license 0 \
  >"$WORK/issuer.log" 2>&1 &
PID=$!
stop() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  if [ "${KEEP_LOG:-}" = 1 ]; then echo "issuer log: $WORK/issuer.log"; else rm -rf "$WORK"; fi
}
trap stop EXIT
for _ in $(seq 1 100); do
  curl -fsS "$BASE/api/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$BASE/api/health" >/dev/null

# Some data, so that lists have items whose schema is checked.
post() { curl -fsS -u "admin:$PW" -H 'content-type: application/json' -d "$2" "$BASE$1"; }
post /api/products '{"slug":"grafana-enterprise","name":"Grafana Enterprise","features":["reporting"]}' >/dev/null
ACCOUNT="$(post /api/accounts '{"company":"Acme","slug":"acme"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
LID="$(post /api/licenses "{\"account_id\":\"$ACCOUNT\",\"products\":[\"grafana-enterprise\"],\"expires_at\":\"2099-01-01T00:00:00Z\",\"max_instances\":5}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lid"])')"
TOKEN="$(post "/api/licenses/$LID/tokens" '{"instance":"https://a.example/"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
INSTANCE="$(curl -fsS -u "admin:$PW" "$BASE/api/licenses/$LID/instances" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
SA="$(post /api/serviceaccounts '{"name":"ci","role":"Viewer"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"

# One worker: CPython before 3.11.8/3.12.1 races when two threads parse
# Python source at once (gh-106905, "AST constructor recursion depth
# mismatch"), which hypothesis does to describe its strategies; it failed a
# CI run here on Python 3.11.7 with --workers 2.

# Path parameters that name what exists, so operations get past their 404s.
cat >"$WORK/schemathesis.toml" <<TOML
[parameters]
"path.lid" = "$LID"
"path.slug" = "grafana-enterprise"

[[operations]]
include-path-regex = "^/api/accounts/"
parameters = { "path.id" = "$ACCOUNT" }

[[operations]]
include-path-regex = "^/api/licenses/[^/]+/instances/"
parameters = { "path.id" = "$INSTANCE" }

[[operations]]
include-path-regex = "^/api/serviceaccounts/"
parameters = { "path.id" = $SA }
TOML

st() {
  "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$BASE/api/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$EXAMPLES" \
    --workers 1 \
    --request-timeout 10 \
    --generation-with-security-parameters false \
    --seed "${SCHEMATHESIS_SEED:-20261125}" \
    --no-color \
    "$@"
}
# The renew endpoint with a license token (first: the portal run revokes
# the license), then the portal as the admin.
st -H "Authorization: Bearer $TOKEN" --include-path /api/tokens/renew
st --auth "admin:$PW" --exclude-path /api/tokens/renew "$@"
