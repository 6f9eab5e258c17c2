"""The middleware in a FastAPI app: in process (what it records), and under
load against the real collector and broker (every event exactly once)."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import mlwatch
from support import App, Collector, exactly_once, post_json, read_event_ids, topics

PORT_COLLECTOR = 21560
PORT_APP = 21563
APPS = Path(__file__).parent / "apps"


class Recorder(mlwatch.Monitor):
    """A Monitor whose events are kept in memory instead of sent."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1", model="fraud", flush_at_exit=None)
        self.events: List[Dict[str, Any]] = []

    def _enqueue(self, kind: str, event: Dict[str, Any]) -> bool:
        self.events.append(event)
        return True


def test_middleware_records_latency_status_features_prediction_and_returns_the_id() -> None:
    rec = Recorder()
    app = FastAPI()
    app.add_middleware(mlwatch.MlwatchMiddleware, monitor=rec, paths=["/predict", "/explicit", "/boom"])

    @app.post("/predict")
    async def predict(body: dict) -> dict:
        return {"score": 0.25, "label": "0", "event_id": mlwatch.current_event_id()}

    @app.post("/explicit")
    def explicit(body: dict) -> dict:  # a sync endpoint runs in a worker thread
        mlwatch.annotate(features={"x": 1.0}, prediction={"value": 3.5}, tags={"region": "eu"})
        return {"anything": [1, 2]}

    @app.post("/boom")
    def boom(body: dict) -> dict:
        raise RuntimeError("model exploded")

    @app.post("/predict/{model_name}")
    def templated(model_name: str, body: dict) -> dict:
        return {"value": 1.0}

    @app.post("/unwatched")
    def unwatched(body: dict) -> dict:
        return {}

    client = TestClient(app, raise_server_exceptions=False)
    r = client.post("/predict", json={"amount": 120.5, "country": "DE", "nested": {"a": 1}})
    assert r.status_code == 200
    eid = r.headers["x-mlwatch-event-id"]
    assert r.json()["event_id"] == eid
    r2 = client.post("/explicit", json={"ignored": True})
    r3 = client.post("/boom", json={"amount": 1})
    assert r3.status_code == 500
    client.post("/unwatched", json={})
    client.post("/predict/churn", json={})
    assert rec.events[-1]["endpoint"] == "predict/{model_name}"  # the route, not the path
    rec.events.pop()
    # An unhandled exception is answered by Starlette's outermost error
    # middleware, outside this one: no header then, but the event is logged.
    assert "x-mlwatch-event-id" not in r3.headers
    assert [e["event_id"] for e in rec.events][:2] == [eid, r2.headers["x-mlwatch-event-id"]]
    assert len(rec.events) == 3
    first, second, third = rec.events
    assert first["features"] == {"amount": 120.5, "country": "DE"}  # scalar fields only
    assert first["prediction"] == {"score": 0.25, "label": "0"}
    assert first["endpoint"] == "predict" and first["status"] == "ok" and first["latency_ms"] > 0
    assert (second["features"], second["prediction"], second["tags"]) == ({"x": 1.0}, {"value": 3.5}, {"region": "eu"})
    assert third["status"] == "error" and "model exploded" in third["error"]
    assert "prediction" not in third


def test_a_response_that_is_not_a_prediction_is_logged_without_one() -> None:
    rec = Recorder()
    app = FastAPI()
    app.add_middleware(mlwatch.MlwatchMiddleware, monitor=rec)

    @app.post("/predict")
    def predict(body: dict) -> dict:
        return {"score": 7}  # not a probability: the middleware drops it, never the request

    assert TestClient(app).post("/predict", json={"a": float(1)}).status_code == 200
    assert "prediction" not in rec.events[0] and rec.events[0]["features"] == {"a": 1.0}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    c = Collector(tmp_path_factory.mktemp("collector"), PORT_COLLECTOR, topics("fastapi")).start()
    yield c
    c.stop()


def test_100_000_requests_under_load_arrive_exactly_once(collector: Collector, tmp_path: Path) -> None:
    app = App(APPS, "load_app", PORT_APP, {"MLWATCH_COLLECTOR_URL": collector.url}, tmp_path / "app.log").start()
    clients, per_client = 8, 12_500
    seen: List[List[str]] = [[] for _ in range(clients)]
    errors: List[str] = []

    def load(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT_APP, timeout=60)
        try:
            for j in range(per_client):
                status, headers, _ = post_json(app.url, "/predict", {"amount": float(j % 1000), "country": "DE"}, conn)
                if status != 200:
                    errors.append(f"client {i} request {j}: {status}")
                    return
                seen[i].append(headers["x-mlwatch-event-id"])
        except Exception as e:  # reported below
            errors.append(f"client {i}: {e!r}")
        finally:
            conn.close()

    try:
        started = time.monotonic()
        threads = [threading.Thread(target=load, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        assert not errors, errors[:5]
        _, _, stats = post_json(app.url, "/mlwatch/flush", {})
    finally:
        app.stop()
    ids = [e for s in seen for e in s]
    print(f"\n{len(ids)} requests in {elapsed:.1f} s ({len(ids) / elapsed:.0f}/s); monitor {stats}")
    assert len(set(ids)) == clients * per_client
    assert stats["delivered"] == len(ids), stats
    assert (stats["dropped_queue_full"], stats["invalid"], stats["failed"], stats["rejected"]) == (0, 0, 0, 0)
    problems = exactly_once(read_event_ids(collector.topics["inference"], len(ids), timeout=300), ids)
    assert not problems, problems
