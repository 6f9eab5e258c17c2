#!/usr/bin/env python3
"""Checks the workspace's layering rules (docs/decisions/0007-analyzer-crates.md).

1. The analysis libraries carry no network stack: `cargo tree -e normal` of
   each lists none of rdkafka, axum, hyper, tokio, tonic, mlwatch-common.
2. The remediator's dependency tree holds no analyzer crate.
3. No import circle between the top-level modules of any crate: an edge
   a -> b for every `crate::b` that module a names (its file and its
   submodules' files); a cycle fails the check and is printed.

Exits 1 with the reasons when a rule is broken.
    python3 scripts/check_layering.py
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SANS_IO = [
    "mlwatch-analyzer-core",
    "mlwatch-analyzer-latency",
    "mlwatch-analyzer-accuracy",
    "mlwatch-analyzer-drift",
]
FORBIDDEN = {"rdkafka", "axum", "hyper", "tokio", "tonic", "mlwatch-common"}


def tree(package, edges="normal"):
    out = subprocess.run(
        ["cargo", "tree", "--offline", "-p", package, "-e", edges, "--prefix", "none", "--format", "{p}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def module_of(src, path):
    """Top-level module a source file belongs to (None for the crate root)."""
    rel = path.relative_to(src)
    if rel.parts[0] == "bin":
        return None
    first = rel.parts[0]
    if len(rel.parts) == 1:
        stem = rel.stem
        return None if stem in ("lib", "main") else stem
    return first


def import_cycles(src):
    mods = {}
    for path in src.rglob("*.rs"):
        m = module_of(src, path)
        if m is None:
            continue
        text = path.read_text()
        # Tests may reach anywhere; the rule is about the code.
        text = text.split("#[cfg(test)]")[0]
        # Doc links are not imports.
        text = re.sub(r"//[^\n]*", "", text)
        names = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        for group in re.findall(r"\buse crate::\{([^}]*)\}", text):
            names |= set(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
        mods.setdefault(m, set()).update(n for n in names if n != m)
    known = set(mods)
    graph = {m: {n for n in deps if n in known} for m, deps in mods.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def main():
    problems = []
    for package in SANS_IO:
        bad = sorted(tree(package) & FORBIDDEN)
        if bad:
            problems.append(f"{package} depends on {', '.join(bad)} (cargo tree -p {package} -e normal)")
    analyzers = sorted(p for p in tree("mlwatch-remediator", "normal,build") if p.startswith("mlwatch-analyzer"))
    if analyzers:
        problems.append(f"mlwatch-remediator depends on {', '.join(analyzers)}")
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--offline", "--no-deps", "--format-version", "1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    crates = 0
    for pkg in meta["packages"]:
        src = Path(pkg["manifest_path"]).parent / "src"
        if not src.is_dir():
            continue
        crates += 1
        for cycle in import_cycles(src):
            problems.append(f"{pkg['name']}: import circle {' -> '.join(cycle)}")
    if problems:
        print("layering: " + "\nlayering: ".join(problems), file=sys.stderr)
        return 1
    print(f"layering: {len(SANS_IO)} analysis libraries without a network stack, "
          f"remediator free of the analyzer, no import circle in {crates} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
