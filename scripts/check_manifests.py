#!/usr/bin/env python3
"""Checks the rendered Kustomize overlays (deploy/k8s) for the mistakes that
break a rollout or an admission, and docker-compose.yml's environment.

    check_manifests.py [OVERLAY=RENDERED.yaml ...]
    check_manifests.py --write-prometheusrule

Without arguments every overlay under deploy/k8s/overlays is rendered with
`kubectl kustomize` (scripts/k8s-check.sh passes what it rendered instead).

Every workload (Deployment, StatefulSet): a container port named `admin`,
readiness `/readyz` and liveness `/healthz` probes on it, resource requests
and limits, a selector matching the pod labels, a ConfigMap providing the file
that `--config` names, `MLWATCH_<SECTION>__<KEY>` variables (inline or from
ConfigMaps) whose section the service knows (read from the service's
`SECTIONS` in its crate's `src/`), the image pinned to the workspace version,
the Pod Security "restricted" profile, its own service account without a
token, a PodDisruptionBudget and a NetworkPolicy. Every Service selects a
workload and targets named ports; a StatefulSet's serviceName exists. The
production overlay's namespace enforces "restricted". A PrometheusRule equals
deploy/prometheus/rules/*.yml (`--write-prometheusrule` regenerates it).
Exits 1 listing problems.
"""
import glob
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "deploy", "k8s")
PROMETHEUSRULE = os.path.join(K8S, "monitoring", "prometheusrule.yaml")
WORKLOADS = ("Deployment", "StatefulSet")
# Pod Security "restricted": volume types allowed.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}


def sections(service):
    # The analyzer's service crate sits beside its libraries.
    crate = os.path.join(ROOT, service, "service") if service == "analyzer" else os.path.join(ROOT, service)
    src = "".join(open(p).read() for p in sorted(glob.glob(os.path.join(crate, "src", "*.rs"))))
    m = re.search(r"pub const SECTIONS: &\[&str\] = &\[(.*?)\];", src, re.S)
    return set(re.findall(r'"([a-z_]+)"', m.group(1))) if m else set()


def workspace_version():
    text = open(os.path.join(ROOT, "Cargo.toml")).read()
    m = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', text, re.S | re.M)
    return m.group(1) if m else None


def prometheus_rule():
    """The PrometheusRule holding deploy/prometheus/rules/*.yml's groups."""
    groups = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "prometheus", "rules", "*.yml"))):
        groups += yaml.safe_load(open(path))["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "mlwatch", "labels": {"app.kubernetes.io/part-of": "mlwatch"}},
        "spec": {"groups": groups},
    }


def write_prometheus_rule():
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    header = (
        "# Generated from deploy/prometheus/rules/*.yml by\n"
        "# `python3 scripts/check_manifests.py --write-prometheusrule`: edit the\n"
        "# rules there (CI checks that the two are equal).\n"
    )
    with open(PROMETHEUSRULE, "w") as f:
        f.write(header + yaml.dump(prometheus_rule(), Dumper=Dumper, sort_keys=False, width=1000))
    print(f"wrote {os.path.relpath(PROMETHEUSRULE, ROOT)}")


def render_all():
    rendered = {}
    for path in sorted(glob.glob(os.path.join(K8S, "overlays", "*", "kustomization.yaml"))):
        overlay = os.path.dirname(path)
        out = subprocess.run(["kubectl", "kustomize", overlay], check=True, capture_output=True, text=True)
        rendered[os.path.basename(overlay)] = out.stdout
    return rendered


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_pod_security(where, pod):
    """Pod Security Standards, profile "restricted" (and so "baseline")."""
    problems = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{where}: {flag} is not allowed")
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {v['name']} of type {sorted(kinds)} is not allowed")
    psc = pod.get("securityContext", {})
    if psc.get("sysctls"):
        problems.append(f"{where}: sysctls are not allowed")
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        sc = c.get("securityContext", {})
        cw = f"{where}: container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{cw}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cw}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{cw}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{cw}: only NET_BIND_SERVICE may be added")
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            problems.append(f"{cw}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{cw}: runAsUser must not be 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{cw}: seccompProfile must be RuntimeDefault or Localhost")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cw}: readOnlyRootFilesystem must be true (mlwatch's own rule)")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{cw}: hostPort is not allowed")
    return problems


def check_overlay(overlay, docs, version):
    problems = []
    where0 = f"overlay {overlay}"
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    accounts = {d["metadata"]["name"]: d for d in by_kind.get("ServiceAccount", [])}
    workloads = [d for k in WORKLOADS for d in by_kind.get(k, [])]
    if len(workloads) != 4:
        problems.append(f"{where0}: {len(workloads)} workloads, expected the four services")
    if overlay == "production":
        for ns in by_kind.get("Namespace", []) or [{"metadata": {"name": "(none)"}}]:
            if ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
                problems.append(f"{where0}: namespace {ns['metadata']['name']} does not enforce Pod Security restricted")
    for d in workloads:
        name = d["metadata"]["name"]
        where = f"{where0}: {d['kind']} {name}"
        spec = d["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        if not selects(spec["selector"]["matchLabels"], labels):
            problems.append(f"{where}: selector does not match the pod labels")
        if d["kind"] == "StatefulSet" and spec.get("serviceName") not in services:
            problems.append(f"{where}: serviceName {spec.get('serviceName')} names no Service")
        problems += check_pod_security(where, pod)
        sa = pod.get("serviceAccountName")
        if sa not in accounts:
            problems.append(f"{where}: service account {sa} is not defined")
        elif accounts[sa].get("automountServiceAccountToken") is not False or pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: the service account token must not be mounted")
        if not any(selects(p["spec"]["selector"].get("matchLabels", {}), labels) for p in by_kind.get("PodDisruptionBudget", [])):
            problems.append(f"{where}: no PodDisruptionBudget")
        if not any(selects(p["spec"]["podSelector"].get("matchLabels", {}), labels) for p in by_kind.get("NetworkPolicy", [])):
            problems.append(f"{where}: no NetworkPolicy of its own")
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if "admin" not in ports:
                problems.append(f"{where}: no container port named admin")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                get = c.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or get.get("port") != "admin":
                    problems.append(f"{where}: {probe} must GET {path} on port admin")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        problems.append(f"{where}: no {r} {kind}")
            image = c.get("image", "")
            if version and not image.endswith(f":{version}"):
                problems.append(f"{where}: image {image} is not pinned to the workspace version {version}")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes and m["name"] not in claims:
                    problems.append(f"{where}: mount {m['mountPath']} names no volume {m['name']}")
            service = c["command"][0].removeprefix("mlwatch-")
            known = sections(service)
            if not known:
                problems.append(f"{where}: cannot read SECTIONS of {service}")
            names = [e["name"] for e in c.get("env", [])]
            for ref in c.get("envFrom", []):
                cm = configmaps.get(ref.get("configMapRef", {}).get("name", ""))
                if cm is None:
                    problems.append(f"{where}: envFrom names a missing ConfigMap")
                else:
                    names += list(cm.get("data", {}))
            for var in names:
                m = re.match(r"MLWATCH_([A-Z_]+?)__", var)
                if m and m.group(1).lower() not in known:
                    problems.append(f"{where}: {var} names an unknown section (known: {sorted(known)})")
            if "--config" in c["command"]:
                cfg = c["command"][c["command"].index("--config") + 1]
                mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                vol = volumes.get(mounts.get(os.path.dirname(cfg), ""), {})
                cm = configmaps.get(vol.get("configMap", {}).get("name", ""))
                if cm is None or os.path.basename(cfg) not in cm.get("data", {}):
                    problems.append(f"{where}: no ConfigMap provides {cfg}")
    for d in services.values():
        sel = d["spec"].get("selector", {})
        targets = [w for w in workloads if selects(sel, w["spec"]["template"]["metadata"]["labels"])]
        if not targets:
            problems.append(f"{where0}: service {d['metadata']['name']} selects no workload")
            continue
        names = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in d["spec"].get("ports", []):
            if p.get("targetPort") not in names:
                problems.append(f"{where0}: service {d['metadata']['name']} targets unknown port {p.get('targetPort')}")
    expected = prometheus_rule()["spec"]
    for d in by_kind.get("PrometheusRule", []):
        if d["spec"] != expected:
            problems.append(
                f"{where0}: PrometheusRule {d['metadata']['name']} differs from deploy/prometheus/rules/*.yml "
                "(run scripts/check_manifests.py --write-prometheusrule)"
            )
    return problems


def check_compose():
    problems = []
    compose = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))
    for name, svc in compose["services"].items():
        cmd = svc.get("command") or []
        if not cmd or cmd[0] not in {f"mlwatch-{s}" for s in ("collector", "analyzer", "alerter", "remediator")}:
            continue
        known = sections(cmd[0].removeprefix("mlwatch-"))
        for key in (svc.get("environment") or {}):
            m = re.match(r"MLWATCH_([A-Z_]+?)__", key)
            if m and m.group(1).lower() not in known:
                problems.append(f"docker-compose.yml: {name}: {key} names an unknown section (known: {sorted(known)})")
    return problems


def main(args):
    if args == ["--write-prometheusrule"]:
        write_prometheus_rule()
        return 0
    if args:
        rendered = {}
        for arg in args:
            overlay, _, path = arg.partition("=")
            if not path:
                print(f"usage: {sys.argv[0]} [OVERLAY=RENDERED.yaml ...] | --write-prometheusrule", file=sys.stderr)
                return 64
            rendered[overlay] = open(path).read()
    else:
        rendered = render_all()
    version = workspace_version()
    problems = [] if version else ["Cargo.toml: no [workspace.package] version"]
    count = 0
    for overlay, text in sorted(rendered.items()):
        docs = [d for d in yaml.safe_load_all(text) if d]
        count += len(docs)
        problems += check_overlay(overlay, docs, version)
    problems += check_compose()
    for p in problems:
        print(p, file=sys.stderr)
    print(
        f"manifests: {count} objects in {len(rendered)} overlays ({', '.join(sorted(rendered))}) "
        f"and docker-compose.yml checked, {len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
