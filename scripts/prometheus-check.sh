#!/usr/bin/env bash
# The real Prometheus check: installs Debian's prometheus (with promtool)
# when missing, validates the rules and the docker-compose scrape config,
# runs the demo stack (two models, late labels, reference profiles captured
# from the first events, the three incidents), scrapes it with a real
# Prometheus on loopback using the repo's rules, and asserts that every
# PromQL expression of the dashboards and rules returns data (latency,
# accuracy against baseline, label coverage and lag, drift per feature,
# data quality, firing alerts, notifications, remediation actions), and
# that every service's /metrics passes `promtool check metrics`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/apt-install.sh prometheus=prometheus promtool=prometheus
promtool check rules deploy/prometheus/rules/*.yml
python3 - <<'PY'
import json, glob
for p in glob.glob("deploy/grafana/dashboards/*.json"):
    d = json.load(open(p))
    variables = [v["name"] for v in d["templating"]["list"]]
    assert "datasource" in variables, f"{p}: no datasource variable"
    for panel in d["panels"]:
        assert panel.get("description"), f"{p}: panel {panel['title']!r} has no description"
        assert panel["datasource"]["uid"] == "${datasource}", f"{p}: panel {panel['title']!r} has a fixed data source"
print("dashboards: valid JSON, a datasource variable, every panel described")
PY

scripts/broker.sh start
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:${MLWATCH_BROKER_PORT:-9092}}"
cargo build --quiet -p mlwatch-demo --bin mlwatch-demo

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"${CARGO_TARGET_DIR:-target}/debug/mlwatch-demo" --keep-running --incident-after-secs 5 --targets-file "$work/targets.json" \
  >"$work/demo.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do [[ -f "$work/targets.json" ]] && break; sleep 0.5; done
[[ -f "$work/targets.json" ]] || { cat "$work/demo.log"; echo "demo did not start" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/prometheus.yml" <<YML
global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - $PWD/deploy/prometheus/rules/*.yml
scrape_configs:
  - job_name: mlwatch
    file_sd_configs:
      - files: ["$work/targets.json"]
YML
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)

# Wait for the first incident to travel end to end, so that alert,
# notification and remediation series exist, then check every expression
# (retrying while the accuracy baselines and drift profiles fill: about a
# minute of traffic).
for _ in $(seq 240); do grep -q "VERIFIED" "$work/demo.log" && break; sleep 0.5; done
if ! python3 scripts/promql_check.py "http://127.0.0.1:$port" 240; then
  echo "--- demo log" >&2; tail -30 "$work/demo.log" >&2
  echo "--- prometheus log" >&2; tail -20 "$work/prometheus.log" >&2
  exit 1
fi

# Every service's live exposition passes promtool's lint (names, types,
# help, reserved labels), now that every series exists.
python3 - "$work/targets.json" >"$work/targets.txt" <<'PY'
import json, sys
for group in json.load(open(sys.argv[1])):
    for t in group["targets"]:
        print(group["labels"]["job"], t)
PY
while read -r job target; do
  if ! curl -fsS "http://$target/metrics" | promtool check metrics; then
    echo "prometheus-check: $job's /metrics fails promtool check metrics" >&2
    exit 1
  fi
  echo "promtool check metrics: $job clean"
done <"$work/targets.txt"
