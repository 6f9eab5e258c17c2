#!/usr/bin/env python3
"""Asserts that every PromQL expression of the dashboards and rules returns
data from a running Prometheus that scrapes mlwatch.

- Dashboard queries and recording rules must return at least one series.
- Alerting rules are conditions that are rightly empty on a healthy system,
  so for them every metric they select must have series (the condition is
  checked by `promtool check rules`).
Dashboard variables are replaced by their defaults ($model -> .*,
$window -> 1m). Retries until everything returns data or the timeout.

usage: promql_check.py PROMETHEUS_URL TIMEOUT_SECS
"""
import glob
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARS = {"$model": ".*", "$window": "1m"}
KEYWORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "or", "and", "unless", "on",
            "without", "max", "min", "avg", "count", "le", "bool", "ignoring", "group_left"}


def expressions():
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "grafana", "dashboards", "*.json"))):
        dash = json.load(open(path))
        for panel in dash.get("panels", []):
            for t in panel.get("targets", []):
                expr = t["expr"]
                for k, v in VARS.items():
                    expr = expr.replace(k, v)
                out.append(("series", f"{os.path.basename(path)}: {panel['title']}", expr))
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "prometheus", "rules", "*.yml"))):
        for group in yaml.safe_load(open(path))["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    out.append(("series", f"{os.path.basename(path)}: record {rule['record']}", rule["expr"]))
                else:
                    for metric in metric_names(rule["expr"]):
                        out.append(("metric", f"{os.path.basename(path)}: alert {rule['alert']}",
                                    f'count({{__name__="{metric}"}})'))
    return out


def metric_names(expr):
    """Metric names an expression selects (labels, functions and keywords
    removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", expr))
    return sorted(n for n in names if n not in KEYWORDS)


def query(base, expr):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]["result"]


def main():
    base, timeout = sys.argv[1], float(sys.argv[2])
    pending = expressions()
    total = len(pending)
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        still = []
        for item in pending:
            try:
                if not query(base, item[2]):
                    still.append(item)
            except Exception as e:  # a bad expression never passes
                still.append((item[0], item[1] + f" [error: {e}]", item[2]))
        pending = still
        if pending:
            time.sleep(3)
    for kind, where, expr in pending:
        print(f"no data: {where}: {expr}", file=sys.stderr)
    print(f"promql: {total - len(pending)} passed, {len(pending)} failed")
    return 1 if pending else 0


if __name__ == "__main__":
    sys.exit(main())
