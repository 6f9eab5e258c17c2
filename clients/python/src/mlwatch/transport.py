"""How a batch reaches the collector: HTTP/JSON (default) or gRPC.

Each transport sends one batch of one kind and says what came back as an
`Outcome`; `Monitor` decides what to do with it (count, retry, split).
"""

from __future__ import annotations

import http.client
import json
import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

from . import validate
from ._http import Connection

INFERENCE = "inference"
LABEL = "label"
_PATHS = {INFERENCE: "/v1/inferences", LABEL: "/v1/labels"}


class Outcome(NamedTuple):
    """What one attempt to send a batch came to."""

    #: The collector's answer ``{"accepted": n, "rejected": [{index, field, reason}]}``, when it judged the events.
    answer: Optional[Dict[str, Any]] = None
    #: 429 / 503 / 5xx or no answer at all (gRPC: RESOURCE_EXHAUSTED, UNAVAILABLE, ...).
    retryable: bool = False
    #: The batch is larger than the collector takes (413, gRPC OUT_OF_RANGE).
    too_large: bool = False
    #: The collector's Retry-After, seconds.
    retry_after: float = 0.0
    #: What went wrong, for `Stats.last_error`.
    problem: Optional[str] = None


class HttpTransport:
    """``POST /v1/inferences`` / ``/v1/labels`` with JSON Lines bodies."""

    def __init__(self, url: str, token: Optional[str], timeout: float) -> None:
        self.conn = Connection(url, token=token, timeout=timeout)

    def send(self, kind: str, events: List[Dict[str, Any]]) -> Outcome:
        # One dumps per event: the GIL is free between them.
        lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=False, allow_nan=False) for e in events]
        try:
            status, headers, data = self.conn.request(
                "POST", _PATHS[kind], "\n".join(lines).encode(), content_type="application/x-ndjson"
            )
        except (OSError, http.client.HTTPException) as e:
            return Outcome(retryable=True, problem=f"{type(e).__name__}: {e}")
        answer = _json(data) if status in (200, 400) else None
        if answer is not None and "accepted" in answer:
            return Outcome(answer=answer)
        problem = f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}"
        return Outcome(
            retryable=status in (429, 503) or status >= 500,
            too_large=status == 413,
            retry_after=_seconds(headers.get("retry-after")),
            problem=problem,
        )

    def close(self) -> None:
        self.conn.close()


class GrpcTransport:
    """``mlwatch.v1.Collector/IngestInferences`` / ``IngestLabels`` (needs ``mlwatch[grpc]``).

    ``target`` is ``host:port`` of the collector's gRPC listener; ``secure``
    uses TLS with the system's roots. The token goes as ``authorization:
    Bearer`` metadata.
    """

    def __init__(self, target: str, token: Optional[str], timeout: float, secure: bool = False) -> None:
        import grpc  # noqa: PLC0415

        from .v1 import collector_pb2, collector_pb2_grpc, events_pb2  # noqa: PLC0415

        self.grpc = grpc
        self.pb = events_pb2
        self.cpb = collector_pb2
        # The collector's HTTP/2 windows (docs/collector.md): large batches do not wait on window updates.
        options = [("grpc.http2.max_frame_size", 1 << 20), ("grpc.max_receive_message_length", 16 << 20)]
        self.channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
            if secure else grpc.insecure_channel(target, options=options)
        )
        self.stub = collector_pb2_grpc.CollectorStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else None
        self.timeout = timeout

    def send(self, kind: str, events: List[Dict[str, Any]]) -> Outcome:
        grpc = self.grpc
        try:
            if kind == INFERENCE:
                request = self.cpb.IngestInferencesRequest(events=[self._inference(e) for e in events])
                reply = self.stub.IngestInferences(request, timeout=self.timeout, metadata=self.metadata)
            else:
                request = self.cpb.IngestLabelsRequest(events=[self._label(e) for e in events])
                reply = self.stub.IngestLabels(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as e:
            code = e.code()
            details = e.details() or ""
            problem = f"gRPC {code.name}: {details}"
            if code == grpc.StatusCode.INVALID_ARGUMENT and not details.startswith("malformed request"):
                return Outcome(answer={"accepted": 0, "rejected": _all_rejected(details, len(events))},
                               problem=problem)
            retry_after = 0.0
            for k, v in (e.trailing_metadata() or ()):
                if k == "retry-after":
                    retry_after = _seconds(v)
            retryable = code in (
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED,
            )
            return Outcome(retryable=retryable, too_large=code == grpc.StatusCode.OUT_OF_RANGE,
                           retry_after=retry_after, problem=problem)
        return Outcome(answer={
            "accepted": reply.accepted,
            "rejected": [{"index": r.index, "field": r.field, "reason": r.reason} for r in reply.rejected],
        })

    def _inference(self, e: Mapping[str, Any]) -> Any:
        pb = self.pb
        m = pb.InferenceEvent(
            event_id=e["event_id"], model=e["model"], model_version=e.get("model_version") or "",
            endpoint=e.get("endpoint") or "", timestamp_ms=_ms(e.get("timestamp")),
            latency_ms=float(e["latency_ms"]),
            status=pb.INFERENCE_STATUS_ERROR if e.get("status") == "error" else pb.INFERENCE_STATUS_OK,
            error=e.get("error") or "", batch_size=e.get("batch_size") or 1,
        )
        p = e.get("prediction")
        if p:
            if p.get("score") is not None:
                m.prediction.score = float(p["score"])
            if p.get("label") is not None:
                m.prediction.label = _class_label(p["label"])
            if p.get("value") is not None:
                m.prediction.value = float(p["value"])
            for cls, s in (p.get("scores") or {}).items():
                m.prediction.scores[str(cls)] = float(s)
        for name, v in (e.get("features") or {}).items():
            f = m.features[name]
            if v is None:
                f.missing = True
            elif isinstance(v, bool):
                f.flag = v
            elif isinstance(v, str):
                f.text = v
            else:
                f.number = float(v)
        for k, v in (e.get("tags") or {}).items():
            m.tags[k] = v
        return m

    def _label(self, e: Mapping[str, Any]) -> Any:
        m = self.pb.LabelEvent(event_id=e["event_id"], model=e["model"], timestamp_ms=_ms(e.get("timestamp")))
        if e.get("label") is not None:
            m.label = _class_label(e["label"])
        if e.get("value") is not None:
            m.value = float(e["value"])
        return m

    def close(self) -> None:
        self.channel.close()


_FIRST = re.compile(r'first: index (\d+) field "(.*?)": (.*)$', re.S)


def _all_rejected(details: str, n: int) -> List[Dict[str, Any]]:
    """Every event of a batch rejected: the status message names the first
    rejection (``all N events rejected; first: index I field "F": REASON``);
    the others get the whole message."""
    out: List[Dict[str, Any]] = [{"index": i, "field": "", "reason": details} for i in range(n)]
    m = _FIRST.search(details)
    if m and int(m.group(1)) < n:
        out[int(m.group(1))] = {"index": int(m.group(1)), "field": m.group(2), "reason": m.group(3)}
    return out


def _class_label(v: Any) -> str:
    """As the collector reads a JSON class label: bools as ``1`` / ``0``."""
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def _ms(ts: Any) -> int:
    if ts is None:
        return 0
    if isinstance(ts, int):
        return ts
    ms = validate.rfc3339_ms(str(ts))
    return 0 if ms is None else ms


def _json(data: bytes) -> Optional[Dict[str, Any]]:
    try:
        v = json.loads(data)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def _seconds(v: Optional[str]) -> float:
    try:
        return max(0.0, float(v or "0"))
    except ValueError:
        return 0.0
