#!/usr/bin/env bash
# Builds and tests the Python client (clients/python): makes a venv with the
# pinned test dependencies (clients/python/requirements-test.txt), builds
# the package's wheel and installs it, builds the collector and
# mlwatch-profile binaries, makes a broker available (as scripts/test.sh),
# and runs the pytest suite against the real collector and broker.
#
#   scripts/python-test.sh [pytest arguments]
#
#   PYTHON             interpreter for the venv (python3)
#   MLWATCH_CACHE_DIR  where the venv lives (default: target/)
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
reqs=clients/python/requirements-test.txt
base="$(realpath -m "${MLWATCH_CACHE_DIR:-target}")"
venv="$base/python-test-venv-$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$reqs" "$stamp"; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$stamp"
fi

# The package as users get it: a wheel built from the source tree.
dist="target/python-dist"
rm -rf "$dist"
"$venv/bin/python" -m build --wheel --no-isolation --outdir "$dist" clients/python >/dev/null
wheel="$(ls "$dist"/mlwatch-*.whl)"
"$venv/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "mlwatch/py.typed" in names, names
PY
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel"

cargo build --quiet -p mlwatch-collector --bin mlwatch-collector -p mlwatch-analyzer-drift --bin mlwatch-profile

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

cd clients/python
# The installed wheel is imported (tests/ has no src/ on its path).
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
