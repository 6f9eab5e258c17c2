"""The FastAPI example of docs/python.md, run as written (the very block)."""

from __future__ import annotations

import re
from pathlib import Path

from support import REPO, App, Collector, post_json, read_event_ids, read_values, topics

PORT_COLLECTOR = 21570
PORT_APP = 21573


def example_source() -> str:
    doc = (REPO / "docs/python.md").read_text()
    m = re.search(r"<!-- example: fastapi_app.py -->\n```python\n(.*?)\n```", doc, re.S)
    assert m, "docs/python.md has no example block"
    return m.group(1) + "\n"


def test_the_docs_fastapi_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "fastapi_app.py").write_text(example_source())
    c = Collector(tmp_path, PORT_COLLECTOR, topics("example")).start()
    try:
        app = App(tmp_path, "fastapi_app", PORT_APP, {"MLWATCH_COLLECTOR_URL": c.url}, tmp_path / "app.log").start()
        try:
            status, headers, body = post_json(app.url, "/predict", {"amount": 620.0, "country": "DE", "is_new": True})
            assert status == 200, body
            eid = headers["x-mlwatch-event-id"]
            assert body == {"score": 0.62, "label": "1", "event_id": eid}
            status, _, body = post_json(app.url, "/feedback", {"event_id": eid, "label": "0"})
            assert (status, body) == (200, {"ok": True})
        finally:
            # SIGTERM: uvicorn shuts down (and re-raises the signal); the
            # middleware flushes the monitor at the lifespan shutdown.
            assert app.stop() in (0, -15), (tmp_path / "app.log").read_text()
        [inference] = read_values(c.topics["inference"], 1)
        for part in (eid.encode(), b"fraud", b"v3", b"amount", b"country", b"DE", b"is_new"):
            assert part in inference, part
        assert read_event_ids(c.topics["labels"], 1) == {eid: 1}
    finally:
        c.stop()
