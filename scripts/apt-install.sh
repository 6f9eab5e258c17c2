#!/usr/bin/env bash
# Installs Debian packages whose commands are missing: root on the
# development machines, sudo on CI runners (GitHub's Ubuntu).
#
#   scripts/apt-install.sh COMMAND=PACKAGE...
#
# e.g. `scripts/apt-install.sh promtool=prometheus`: installs `prometheus`
# unless `promtool` is already on the PATH.
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
done
((${#missing[@]})) || exit 0
echo "apt-install: installing ${missing[*]}" >&2
sudo=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then sudo=(sudo); fi
apt() { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
apt install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt update -qq >/dev/null && apt install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
