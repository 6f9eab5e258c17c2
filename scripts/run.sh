#!/usr/bin/env bash
# Runs mlwatch locally: makes a Kafka-API broker available (reuses
# --bootstrap-servers / $KAFKA_BOOTSTRAP_SERVERS, else installs and starts
# the local one), then starts the four services, a simulated serving
# platform, local Slack and PagerDuty receivers, a mail catcher and a
# traffic generator for two models, injects three incidents one after
# another (latency surge, accuracy decay with late labels, covariate drift)
# and shows each detected, paged, remediated and resolved, then a summary
# table. About 3.5 minutes after the build. It prints the web UI's address
# (http://127.0.0.1:PORT/ui/, served by the analyzer); --keep-running keeps it up.
#
#   scripts/run.sh [--keep-running] [--incident-after-secs N] [--bootstrap-servers HOST:PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --bootstrap-servers) export KAFKA_BOOTSTRAP_SERVERS="${args[i + 1]:-}" ;;
    --bootstrap-servers=*) export KAFKA_BOOTSTRAP_SERVERS="${args[i]#*=}" ;;
  esac
done
scripts/broker.sh start
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:${MLWATCH_BROKER_PORT:-9092}}"
echo "building mlwatch (the first build takes a few minutes)..." >&2
cargo build --quiet -p mlwatch-demo --bin mlwatch-demo
exec "${CARGO_TARGET_DIR:-target}/debug/mlwatch-demo" "$@"
