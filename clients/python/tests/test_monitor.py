"""`Monitor` against the real collector binary and the real broker."""

from __future__ import annotations

import collections
import datetime
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import mlwatch
from support import REPO, Collector, event_id_of, exactly_once, read_event_ids, read_values, topics

# Fixed ports of this suite: 21550-21599 (collector HTTP p, gRPC p+1, admin p+2).
PORT_DELIVERY = 21550
PORT_OUTAGE = 21553


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    c = Collector(tmp_path_factory.mktemp("collector"), PORT_DELIVERY, topics("monitor"),
                  extra="[limits]\nmax_string_bytes = 64\n").start()
    yield c
    c.stop()


def test_events_and_labels_arrive_once_and_rejections_name_event_and_field(collector: Collector) -> None:
    with mlwatch.Monitor(collector.url, model="fraud", model_version="v3", batch_size=100) as m:
        ids = [
            m.log_inference(latency_ms=1.5 + i, prediction={"score": 0.5}, features={"amount": float(i), "country": "DE"})
            for i in range(1000)
        ]
        # The client does not know this collector's string limit (64 bytes): the collector rejects it.
        too_long = m.log_inference(latency_ms=1.0, features={"note": "x" * 100})
        for eid in ids[:10]:
            m.log_label(event_id=eid, label="1")
        assert m.flush(60)
        s = m.stats()
        assert (s.delivered, s.rejected, s.dropped_queue_full, s.failed, s.queued) == (1010, 1, 0, 0, 0)
        assert m.rejections() == [mlwatch.Rejection("inference", too_long, "features.note",
                                                    "string too long: 100 bytes > 64")]
    assert not exactly_once(read_event_ids(collector.topics["inference"], 1000), ids)
    assert not exactly_once(read_event_ids(collector.topics["labels"], 10), ids[:10])


def test_invalid_events_raise_naming_the_event_and_the_field(collector: Collector) -> None:
    with mlwatch.Monitor(collector.url, model="fraud") as m:
        cases = [
            (dict(event_id="e1", latency_ms=-1.5), "e1", "latency_ms", "must not be negative, found -1.5"),
            (dict(event_id="e2", latency_ms=1, prediction={"score": 1.5}), "e2", "prediction.score",
             "expected a probability in [0, 1], found 1.5"),
            (dict(event_id="e3", latency_ms=1, prediction={"proba": 0.5}), "e3", "prediction.proba", "unknown field"),
            (dict(event_id="e4", latency_ms=1, features={"a": [1]}), "e4", "features.a",
             "expected a number, string, bool or null, found an array"),
            (dict(event_id="e5", latency_ms=float("nan")), "e5", "latency_ms", "must be finite, found nan"),
            (dict(event_id="e6", latency_ms=1, status="maybe"), "e6", "status", "expected \"ok\" or \"error\", found 'maybe'"),
            (dict(event_id="e7", latency_ms=1, timestamp="yesterday"), "e7", "timestamp",
             "not an RFC 3339 timestamp: 'yesterday'"),
            (dict(event_id="e8", latency_ms=1, features={"bad": float("inf")}), "e8", "features.bad",
             "must be finite, found inf"),
            (dict(event_id="e\n9", latency_ms=1), "e\n9", "event_id", "contains control characters"),
        ]
        for kwargs, eid, field, reason in cases:
            with pytest.raises(mlwatch.ValidationError) as info:
                m.log_inference(**kwargs)  # type: ignore[arg-type]
            assert (info.value.event_id, info.value.field, info.value.reason) == (eid, field, reason)
            assert str(info.value) == f"event {eid!r}: {field}: {reason}"
        with pytest.raises(mlwatch.ValidationError, match="exactly one of label and value"):
            m.log_label(event_id="e9", label="1", value=2.0)
        assert m.stats().invalid == len(cases) + 1
        assert m.stats().logged == 0


def test_decorator_returns_the_event_id_and_logs_errors(collector: Collector) -> None:
    with mlwatch.Monitor(collector.url, model="fraud") as m:
        @m.track
        def predict(features: dict) -> dict:
            if features["amount"] < 0:
                raise ValueError("negative amount")
            return {"score": 0.9, "label": "1", "debug": "not a prediction field"}

        out = predict({"amount": 10.0, "country": "DE"})
        assert out.result["score"] == 0.9 and len(out.event_id) == 32
        with pytest.raises(ValueError) as info:
            predict({"amount": -1.0})
        failed = info.value.mlwatch_event_id  # type: ignore[attr-defined]
        assert m.flush(30)
        assert m.stats().delivered == 2
    ids = read_event_ids(collector.topics["inference"], 2)
    assert ids[out.event_id] == 1 and ids[failed] == 1


def test_a_collector_stopped_for_30_s_loses_nothing_that_fits_the_queue(tmp_path: Path) -> None:
    c = Collector(tmp_path, PORT_OUTAGE, topics("outage")).start()
    try:
        m = mlwatch.Monitor(c.url, model="fraud", max_queue=2000, batch_size=250, max_backoff=1.0)
        before = [m.log_inference(latency_ms=1.0) for _ in range(500)]
        assert m.flush(30)
        c.stop()
        during = []
        # 30 s away, 5 000 events logged meanwhile (the queue holds 2 000).
        t0 = time.monotonic()
        for i in range(5000):
            during.append(m.log_inference(latency_ms=2.0, features={"i": i}))
            if i % 500 == 499:
                time.sleep(max(0.0, t0 + 3.0 * (i + 1) / 500 - time.monotonic()))
        time.sleep(max(0.0, t0 + 30.0 - time.monotonic()))
        s = m.stats()
        # The sender holds one batch it keeps retrying; the queue holds 2 000.
        assert s.queued == 2000 and s.in_flight == 250, s
        assert s.dropped_queue_full == 5000 - 2250 and s.retries > 0, s
        c.start()
        assert m.flush(120)
        s = m.stats()
        assert (s.delivered, s.dropped_queue_full, s.failed, s.rejected) == (2750, 2750, 0, 0), s
        m.close()
        # Drop policy: the newest are dropped, so exactly the first 2 250 logged during the outage arrive.
        kept = before + during[:2250]
        assert not exactly_once(read_event_ids(c.topics["inference"], len(kept)), kept)
    finally:
        c.stop()


def test_flush_and_close_give_up_when_the_collector_never_answers() -> None:
    # Nothing listens on this port (inside the suite's range, never started).
    m = mlwatch.Monitor("http://127.0.0.1:21599", model="fraud", max_backoff=0.2, flush_at_exit=None)
    m.log_inference(latency_ms=1.0)
    assert not m.flush(1.0)
    started = time.monotonic()
    assert not m.close(1.0)
    assert time.monotonic() - started < 5.0
    s = m.stats()
    assert s.failed == 1 and s.delivered == 0 and "ConnectionRefusedError" in (s.last_error or ""), s
    assert not threading.enumerate().count(m._thread)  # the sender has stopped


def test_grpc_transport_delivers_events_and_labels_and_reports_rejections(collector: Collector) -> None:
    target = f"127.0.0.1:{collector.http_port + 1}"
    now = datetime.datetime.now(datetime.timezone.utc)
    with mlwatch.Monitor(target, model="fraud", transport="grpc", batch_size=100) as m:
        ids = [
            m.log_inference(
                latency_ms=0.5 + i, timestamp=now.isoformat() if i % 2 else now, model_version="v9",
                prediction={"score": 0.25, "label": True, "scores": {"a": 0.25, "b": 0.75}},
                features={"amount": float(i), "n": i, "country": "DE", "is_new": False, "age": None},
                tags={"region": "eu"},
            )
            for i in range(300)
        ]
        too_long = m.log_inference(latency_ms=1.0, features={"note": "y" * 100})
        m.log_label(event_id=ids[0], label=1)
        m.log_label(event_id=ids[1], value=2.5)
        assert m.flush(60)
        s = m.stats()
        assert (s.delivered, s.rejected, s.failed) == (302, 1, 0), s
        assert m.rejections() == [mlwatch.Rejection("inference", too_long, "features.note",
                                                    "string too long: 100 bytes > 64")]
    values = read_values(collector.topics["inference"], len(ids))  # at least this test's
    grpc_ones = [v for v in values if b"v9" in v]
    assert not exactly_once(collections.Counter(event_id_of(v) for v in grpc_ones), ids)
    assert all(b"eu" in v and b"country" in v for v in grpc_ones)
    labels = read_event_ids(collector.topics["labels"], 2)
    assert labels[ids[0]] == 1 and labels[ids[1]] == 1


def test_grpc_transport_retries_an_absent_collector_and_gives_up_at_close() -> None:
    m = mlwatch.Monitor("127.0.0.1:21598", model="fraud", transport="grpc", max_backoff=0.2, flush_at_exit=None,
                        timeout=2.0)
    m.log_inference(latency_ms=1.0)
    assert not m.flush(1.5)
    assert not m.close(1.0)
    s = m.stats()
    assert s.failed == 1 and s.retries > 0 and "UNAVAILABLE" in (s.last_error or ""), s


def test_the_generated_grpc_code_is_the_protos(tmp_path: Path) -> None:
    subprocess.run([str(REPO / "scripts/python-protos.sh"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    committed = REPO / "clients/python/src/mlwatch/v1"
    for f in sorted((tmp_path / "mlwatch/v1").iterdir()):
        assert f.read_text() == (committed / f.name).read_text(), f"{f.name} is stale: run scripts/python-protos.sh"
