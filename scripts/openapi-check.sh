#!/usr/bin/env bash
# The HTTP API contracts, checked against the running services: starts the
# collector, analyzer, alerter and remediator (debug builds, example configs
# from config/ with private topics, consumer groups and ports 21650-21659,
# state under a temporary directory) and runs schemathesis (pinned, in a
# venv under target/) against each service's GET /openapi.json: no answer
# 5xx, and every answer's status, content type, headers and body as the
# contract says. At most $OPENAPI_MAX_EXAMPLES (default 25) generated
# cases per operation, plus the coverage phase's boundary cases; no
# stateful phase. Needs the broker (scripts/broker.sh start) and python3.
# docs/decisions/0016-http-api-contract.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
target="${CARGO_TARGET_DIR:-target}"
venv="$(mkdir -p "$target" && cd "$target" && pwd)/openapi-venv"
examples="${OPENAPI_MAX_EXAMPLES:-25}"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

scripts/broker.sh start >/dev/null
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:${MLWATCH_BROKER_PORT:-9092}}"
cargo build --quiet -p mlwatch-collector -p mlwatch-analyzer -p mlwatch-alerter -p mlwatch-remediator \
  --bin mlwatch-collector --bin mlwatch-analyzer --bin mlwatch-alerter --bin mlwatch-remediator
bin="$(cd "$target/debug" && pwd)"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

run="openapi-$(date +%s)-$$"
# Private topics and groups for this run, on the shared broker.
export MLWATCH_KAFKA__BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP_SERVERS"
for t in inference labels alerts actions deadletter profiles; do
  export "MLWATCH_KAFKA__TOPICS__${t^^}=mlwatch.$t.v1.$run"
done
export MLWATCH_ANALYZER__STATE_TOPIC="mlwatch.analyzer.state.v1.$run"
export MLWATCH_ANALYZER__GROUP_ID="mlwatch-analyzer-$run"
export MLWATCH_ALERTER__GROUP_ID="mlwatch-alerter-$run"
export MLWATCH_REMEDIATOR__GROUP_ID="mlwatch-remediator-$run"
export MLWATCH_SERVING__ENDPOINT="http://127.0.0.1:21659"

# Each service runs in its own directory under $work (its data/ goes
# there) from its example config in config/, except the alerter: its
# example names secret files and real receivers, so it runs on its
# defaults (no receivers).
repo="$PWD"
: >"$work/alerter.toml"
start() {
  local name=$1 config=$2
  shift 2
  mkdir -p "$work/$name"
  (cd "$work/$name" && exec env "$@" "$bin/mlwatch-$name" --config "$config") >"$work/$name.log" 2>&1 &
  pids+=($!)
}
start collector "$repo/config/collector.toml" MLWATCH_HTTP__LISTEN=127.0.0.1:21650 MLWATCH_GRPC__LISTEN=127.0.0.1:21651 \
  MLWATCH_ADMIN__LISTEN=127.0.0.1:21652
start analyzer "$repo/config/analyzer.toml" MLWATCH_ADMIN__LISTEN=127.0.0.1:21653
start alerter "$work/alerter.toml" MLWATCH_ADMIN__LISTEN=127.0.0.1:21654
start remediator "$repo/config/remediator.toml" MLWATCH_ADMIN__LISTEN=127.0.0.1:21655

declare -A contract=(
  [collector]=http://127.0.0.1:21650
  [analyzer]=http://127.0.0.1:21653
  [alerter]=http://127.0.0.1:21654
  [remediator]=http://127.0.0.1:21655
)
declare -A admin=([collector]=21652 [analyzer]=21653 [alerter]=21654 [remediator]=21655)

failed=()
for name in collector analyzer alerter remediator; do
  ready=""
  for _ in $(seq 240); do
    if curl -fsS "http://127.0.0.1:${admin[$name]}/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.5
  done
  if [[ -z "$ready" ]]; then
    echo "$name did not become ready" >&2
    tail -30 "$work/$name.log" >&2
    exit 1
  fi
done
for name in collector analyzer alerter remediator; do
  echo "== schemathesis: $name (${contract[$name]}/openapi.json)"
  # From $work: schemathesis keeps its cache in the working directory.
  if ! (cd "$work" && "$venv/bin/schemathesis" run "${contract[$name]}/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" \
    --generation-deterministic \
    --request-timeout 30 \
    --no-color); then
    failed+=("$name")
    echo "--- $name log" >&2
    tail -20 "$work/$name.log" >&2
  fi
done
if ((${#failed[@]})); then
  echo "contract check failed: ${failed[*]}" >&2
  exit 1
fi
echo "contracts: every service's answers match its /openapi.json"
