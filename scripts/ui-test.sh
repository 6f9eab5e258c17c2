#!/usr/bin/env bash
# End-to-end browser test of the web UI (docs/ui.md): starts the demo stack
# (mlwatch-demo --keep-running: the four services, the simulated platform,
# the receivers, traffic and the three incidents) against a real broker and
# drives Debian's chromium with playwright-core through the overview, the
# drifted model's drift page and the incident timeline
# (ui/e2e/ui.test.mjs). Screenshots go to target/ui-screenshots/.
#
#   scripts/ui-test.sh [--bootstrap-servers HOST:PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == --bootstrap-servers ]]; then export KAFKA_BOOTSTRAP_SERVERS="$2"; fi
target="${CARGO_TARGET_DIR:-target}"
shots="$target/ui-screenshots"

if ! command -v chromium >/dev/null; then
  echo "ui-test: installing Debian's chromium" >&2
  apt-get install -y chromium >/dev/null
fi
(cd ui/e2e && npm ci --no-audit --no-fund --loglevel=error)

if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  scripts/broker.sh start
  export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:${MLWATCH_BROKER_PORT:-9092}"
fi
cargo build --quiet --locked -p mlwatch-demo --bin mlwatch-demo

rm -rf "$shots" && mkdir -p "$shots"
log="$shots/demo.log"
"$target/debug/mlwatch-demo" --keep-running >"$log" 2>&1 &
demo=$!
stop_demo() { kill -TERM "$demo" 2>/dev/null && wait "$demo" 2>/dev/null || true; }
trap stop_demo EXIT

url=""
for _ in $(seq 1 120); do
  url="$(sed -n 's/^web UI: \(http[^ ]*\).*/\1/p' "$log" | head -1)"
  [[ -n "$url" ]] && break
  kill -0 "$demo" 2>/dev/null || { cat "$log" >&2; echo "ui-test: the demo stack exited" >&2; exit 1; }
  sleep 1
done
[[ -n "$url" ]] || { cat "$log" >&2; echo "ui-test: the demo printed no UI address" >&2; exit 1; }
echo "ui-test: demo stack up, UI at $url" >&2

status=0
node ui/e2e/ui.test.mjs "$url" "$shots" || status=$?
if [[ $status -ne 0 ]]; then
  echo "ui-test: the demo's log:" >&2
  tail -n 60 "$log" >&2
fi
exit $status
