#!/usr/bin/env python3
"""Checks deploy/k8s/*.yaml for the mistakes that break a rollout.

Every Deployment: a container port named `admin`, readiness `/readyz` and
liveness `/healthz` probes on it, resource requests, a selector matching the
pod labels, a ConfigMap providing the file that `--config` names, and
`MLWATCH_<SECTION>__<KEY>` variables whose section the service knows (read
from the service's `SECTIONS` in its crate's `src/`). Every Service selects a
Deployment and targets named container ports. Exits 1 listing problems.
"""
import glob
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sections(service):
    # The analyzer's service crate sits beside its libraries.
    crate = os.path.join(ROOT, service, "service") if service == "analyzer" else os.path.join(ROOT, service)
    src = "".join(open(p).read() for p in sorted(glob.glob(os.path.join(crate, "src", "*.rs"))))
    m = re.search(r"pub const SECTIONS: &\[&str\] = &\[(.*?)\];", src, re.S)
    return set(re.findall(r'"([a-z_]+)"', m.group(1))) if m else set()


def main():
    docs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "k8s", "*.yaml"))):
        for d in yaml.safe_load_all(open(path)):
            if d:
                docs.append((os.path.basename(path), d))
    problems = []
    configmaps = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "ConfigMap"}
    deployments = [(f, d) for f, d in docs if d["kind"] == "Deployment"]
    for f, d in deployments:
        name = d["metadata"]["name"]
        spec = d["spec"]
        labels = spec["template"]["metadata"]["labels"]
        for k, v in spec["selector"]["matchLabels"].items():
            if labels.get(k) != v:
                problems.append(f"{f}: {name}: selector {k}={v} does not match the pod labels")
        for c in spec["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if "admin" not in ports:
                problems.append(f"{f}: {name}: no container port named admin")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                get = c.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or get.get("port") != "admin":
                    problems.append(f"{f}: {name}: {probe} must GET {path} on port admin")
            if not c.get("resources", {}).get("requests"):
                problems.append(f"{f}: {name}: no resource requests")
            service = c["command"][0].removeprefix("mlwatch-")
            known = sections(service)
            if not known:
                problems.append(f"{f}: {name}: cannot read SECTIONS of {service}")
            for e in c.get("env", []):
                m = re.match(r"MLWATCH_([A-Z_]+?)__", e["name"])
                if m and m.group(1).lower() not in known:
                    problems.append(f"{f}: {name}: {e['name']} names an unknown section (known: {sorted(known)})")
            if "--config" in c["command"]:
                cfg = c["command"][c["command"].index("--config") + 1]
                mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
                mount = os.path.dirname(cfg)
                vol = volumes.get(mounts.get(mount, ""), {})
                cm = configmaps.get(vol.get("configMap", {}).get("name", ""))
                if cm is None or os.path.basename(cfg) not in cm.get("data", {}):
                    problems.append(f"{f}: {name}: no ConfigMap provides {cfg}")
    for f, d in docs:
        if d["kind"] != "Service":
            continue
        sel = d["spec"]["selector"]
        targets = [dep for _, dep in deployments
                   if all(dep["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if not targets:
            problems.append(f"{f}: service {d['metadata']['name']} selects no Deployment")
            continue
        names = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in d["spec"]["ports"]:
            if p.get("targetPort") not in names:
                problems.append(f"{f}: service {d['metadata']['name']} targets unknown port {p.get('targetPort')}")
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
    for p in problems:
        print(p, file=sys.stderr)
    print(f"manifests: {len(docs)} objects and docker-compose.yml checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
