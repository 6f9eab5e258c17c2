"""Benchmark: the request latency a FastAPI app pays for `MlwatchMiddleware`.

Starts the real collector (private topics on the local broker) and the load
test's app twice, on uvicorn in processes of their own: with the middleware
(every request logged through a `Monitor` to the collector) and without.
Clients send the same JSON request to both in alternation, each measuring
every request's latency end to end; the figures are per app and their
difference. Two loads: one client (latency alone) and several concurrent
clients (the app busy, the sender thread competing for the GIL).

    scripts/python-test.sh --co -q   # once: the venv, the wheel, the binaries
    target/python-test-venv-3.11/bin/python clients/python/bench/middleware_overhead.py

Not a test: it asserts nothing and prints figures (docs/python.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import App, Collector, topics  # noqa: E402

APPS = Path(__file__).resolve().parents[1] / "tests" / "apps"
BODY = json.dumps({"amount": 620.0, "country": "DE"})


def percentile(xs: List[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(ports: Dict[str, int], clients: int, per_client: int) -> Dict[str, List[float]]:
    lat: Dict[str, List[float]] = {name: [] for name in ports}
    lock = threading.Lock()

    def client() -> None:
        conns = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for name, port in ports.items()}
        mine: Dict[str, List[float]] = {name: [] for name in ports}
        headers = {"Content-Type": "application/json"}
        for i in range(per_client):
            order = list(ports) if i % 2 == 0 else list(reversed(list(ports)))
            for name in order:
                t = time.perf_counter()
                conns[name].request("POST", "/predict", body=BODY, headers=headers)
                r = conns[name].getresponse()
                r.read()
                mine[name].append((time.perf_counter() - t) * 1000.0)
                assert r.status == 200
        with lock:
            for name in ports:
                lat[name].extend(mine[name])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000, help="requests per app and load")
    ap.add_argument("--concurrent", type=int, default=4, help="clients of the concurrent load")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlwatch-bench-"))
    collector = Collector(tmp, 21580, topics("bench")).start()
    apps = {
        "without": App(APPS, "load_app", 21584, {"MLWATCH_COLLECTOR_URL": collector.url, "MLWATCH_MIDDLEWARE": "0"},
                       tmp / "without.log"),
        "with": App(APPS, "load_app", 21583, {"MLWATCH_COLLECTOR_URL": collector.url}, tmp / "with.log"),
    }
    try:
        for a in apps.values():
            a.start()
        ports = {name: a.port for name, a in apps.items()}
        run(ports, 1, 500)  # warm-up
        print(f"{args.requests} requests per app and load; latency seen by the client, ms")
        print(f"{'load':<14} {'app':<8} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'mean':>7}")
        for clients in (1, args.concurrent):
            lat = run(ports, clients, args.requests // clients)
            row = {}
            for name in ("without", "with"):
                xs = lat[name]
                row[name] = [percentile(xs, q) for q in (0.5, 0.9, 0.99, 0.999)] + [statistics.fmean(xs)]
                print(f"{f'{clients} client(s)':<14} {name:<8} " + " ".join(f"{v:7.3f}" for v in row[name]))
            diff = [w - o for w, o in zip(row["with"], row["without"])]
            print(f"{'':<14} {'overhead':<8} " + " ".join(f"{v:+7.3f}" for v in diff))
        with_app = apps["with"]
        conn = http.client.HTTPConnection("127.0.0.1", with_app.port, timeout=120)
        conn.request("POST", "/mlwatch/flush", body=b"{}", headers={"Content-Type": "application/json"})
        print("monitor of the app with the middleware:", json.loads(conn.getresponse().read()))
    finally:
        for a in apps.values():
            a.stop()
        collector.stop()


if __name__ == "__main__":
    main()
