#!/usr/bin/env bash
# Renders every Kustomize overlay under deploy/k8s/overlays and checks it:
#   1. scripts/check_manifests.py (probes, ports, config, sections, pinned
#      image, Pod Security "restricted", PDBs, NetworkPolicies, the
#      PrometheusRule equal to deploy/prometheus/rules/*.yml);
#   2. kubernetes-validate --strict against Kubernetes' own schemas (unknown
#      fields rejected), for every built-in kind;
#   3. the Prometheus Operator's objects against the schemas of its CRDs
#      (scripts/k8s/crd-validate.mjs);
#   4. checkov on the production overlay, with the checks skipped in
#      deploy/k8s/checkov-skips.yaml (each with its reason).
# kubectl comes from Debian's kubernetes-client when missing; the Python
# validators and the CRD schemas are pinned in scripts/k8s/ and installed once
# into ${MLWATCH_CACHE_DIR:-$HOME/.cache/mlwatch}, keyed by a hash of their
# pins. Rendered output is kept in target/k8s/ for a look.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBERNETES_VERSIONS=(1.29.0 1.34.0)

scripts/apt-install.sh kubectl=kubernetes-client node=nodejs npm=npm
cache="${MLWATCH_CACHE_DIR:-$HOME/.cache/mlwatch}"
mkdir -p "$cache" target/k8s
key() { cat "$@" | sha256sum | cut -c1-16; }

venv="$cache/k8s-venv-$(key scripts/k8s/requirements.txt)"
if [[ ! -e $venv/.complete ]]; then
  echo "k8s-check: installing the validators into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/k8s/requirements.txt
  touch "$venv/.complete"
fi
npmdir="$cache/k8s-npm-$(key scripts/k8s/package.json scripts/k8s/package-lock.json)"
if [[ ! -e $npmdir/.complete ]]; then
  echo "k8s-check: installing the CRD schemas into $npmdir" >&2
  rm -rf "$npmdir"
  mkdir -p "$npmdir"
  cp scripts/k8s/package.json scripts/k8s/package-lock.json "$npmdir/"
  (cd "$npmdir" && npm ci --silent --no-audit --no-fund >/dev/null)
  touch "$npmdir/.complete"
fi

args=()
for dir in deploy/k8s/overlays/*/; do
  overlay=$(basename "$dir")
  kubectl kustomize "$dir" >"target/k8s/$overlay.yaml" 2>"target/k8s/$overlay.err" \
    || { cat "target/k8s/$overlay.err" >&2; exit 1; }
  args+=("$overlay=target/k8s/$overlay.yaml")
done
echo "k8s-check: rendered ${args[*]%%=*} with $(kubectl version --client 2>/dev/null | head -1)"

python3 scripts/check_manifests.py "${args[@]}"

for arg in "${args[@]}"; do
  overlay=${arg%%=*}
  rendered=${arg#*=}
  # Built-in kinds to kubernetes-validate, the operator's to its CRD schemas.
  "$venv/bin/python" - "$rendered" "target/k8s/$overlay.core.yaml" "target/k8s/$overlay.crd.json" <<'EOF'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
crd = [d for d in docs if d["apiVersion"].split("/")[0].endswith("monitoring.coreos.com")]
yaml.safe_dump_all([d for d in docs if d not in crd], open(sys.argv[2], "w"))
json.dump(crd, open(sys.argv[3], "w"))
EOF
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "target/k8s/$overlay.core.yaml" 2>&1) \
      && [[ -z $out ]] \
      || { echo "$out" >&2; echo "k8s-check: $overlay does not validate against Kubernetes $version" >&2; exit 1; }
  done
  echo "k8s-check: $overlay valid (kubernetes-validate --strict, Kubernetes ${KUBERNETES_VERSIONS[*]})"
  if [[ $(cat "target/k8s/$overlay.crd.json") != "[]" ]]; then
    node scripts/k8s/crd-validate.mjs "$npmdir/node_modules" <"target/k8s/$overlay.crd.json" | sed "s/^/k8s-check: $overlay: /"
  fi
done

skips=$("$venv/bin/python" -c '
import sys, yaml
print(",".join(s["id"] for s in yaml.safe_load(open(sys.argv[1]))["skip"]))' deploy/k8s/checkov-skips.yaml)
"$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
  --skip-check "$skips" -f target/k8s/production.yaml >target/k8s/checkov.txt 2>&1 \
  || { cat target/k8s/checkov.txt >&2; echo "k8s-check: checkov failed on production" >&2; exit 1; }
echo "k8s-check: checkov clean on production ($(grep -o 'Passed checks: [0-9]*' target/k8s/checkov.txt); skipped: $skips)"
