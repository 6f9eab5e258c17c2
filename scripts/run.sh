#!/usr/bin/env bash
# Runs mlwatch locally: makes a Kafka-API broker available (reuses
# $KAFKA_BOOTSTRAP_SERVERS, else installs and starts the local one), then
# starts the four services, a simulated serving platform, a Slack stand-in
# and a traffic generator, injects an incident and shows it being detected,
# paged, remediated and resolved.
#
#   scripts/run.sh [--keep-running] [--incident-after-secs N] [--bootstrap-servers HOST:PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/broker.sh start
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:${MLWATCH_BROKER_PORT:-9092}}"
echo "building mlwatch (the first build takes a few minutes)..." >&2
cargo build --quiet -p mlwatch-demo --bin mlwatch-demo
exec "${CARGO_TARGET_DIR:-target}/debug/mlwatch-demo" "$@"
