#!/usr/bin/env bash
# Generates the Python protobuf and gRPC code of the client's optional gRPC
# transport (clients/python/src/mlwatch/v1/) from the repo's protos
# (proto/proto/mlwatch/v1/events.proto, collector.proto) with grpcio-tools
# (the version pinned in clients/python/requirements-test.txt). The
# generated files are committed; the test suite regenerates them into a
# temporary directory and fails when they differ.
#
#   scripts/python-protos.sh [OUT_DIR]    (default clients/python/src)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-clients/python/src}"
python="${PYTHON:-python3}"
mkdir -p "$out/mlwatch/v1"
"$python" -m grpc_tools.protoc -Iproto/proto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/proto/mlwatch/v1/events.proto proto/proto/mlwatch/v1/collector.proto
cat > "$out/mlwatch/v1/__init__.py" <<'PY'
"""Generated protobuf / gRPC code of proto/proto/mlwatch/v1 (scripts/python-protos.sh); do not edit."""
PY
