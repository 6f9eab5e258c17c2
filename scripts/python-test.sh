#!/usr/bin/env bash
# Builds and tests the Python client (clients/python): makes a venv with the
# pinned test dependencies (clients/python/requirements-test.txt), builds
# the package's wheel and installs it, builds the collector, analyzer and
# mlwatch-profile binaries, makes a broker available (scripts/broker.sh),
# checks the types (mypy --strict) and runs the pytest suite against the
# real binaries and broker.
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

cargo build --quiet -p mlwatch-collector --bin mlwatch-collector -p mlwatch-analyzer --bin mlwatch-analyzer \
  -p mlwatch-analyzer-drift --bin mlwatch-profile

# The broker the tests use: $KAFKA_BOOTSTRAP_SERVERS, else the local one
# (started if needed and left running, like any shared broker).
scripts/broker.sh start
eval "$(scripts/broker.sh env)"

cd clients/python
# The package is typed (py.typed): mypy --strict on its sources.
"$venv/bin/python" -m mypy
# The installed wheel is imported (tests/ has no src/ on its path).
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
