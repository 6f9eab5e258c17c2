#!/usr/bin/env bash
# Runs every mlwatch test on this machine: makes a Kafka-API broker available
# (reuses $KAFKA_BOOTSTRAP_SERVERS, else installs and starts the local one),
# then runs the workspace's unit and integration tests.
#
#   scripts/test.sh [extra nextest/cargo-test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

port="${MLWATCH_BROKER_PORT:-9092}"
started_here=0
if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]] && ! scripts/broker.sh status >/dev/null 2>&1; then
  started_here=1
fi
scripts/broker.sh start
if ((started_here)); then
  trap 'scripts/broker.sh stop' EXIT
fi
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$port}"
# The alerter's tests run a real Prometheus and Alertmanager.
scripts/apt-install.sh prometheus=prometheus prometheus-alertmanager=prometheus-alertmanager
# The broker-pause test starts a private Tansu of its own, whatever broker
# the other tests use.
MLWATCH_TANSU_BIN="${MLWATCH_TANSU_BIN:-$(scripts/broker.sh install)}"
export MLWATCH_TANSU_BIN

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@" -- --test-threads 4
fi
