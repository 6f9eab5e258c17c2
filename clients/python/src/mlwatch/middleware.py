"""ASGI middleware for FastAPI and Starlette: one inference event per request.

```python
app = FastAPI()
app.add_middleware(MlwatchMiddleware, monitor=monitor, model="fraud", paths=["/predict"])
```

For each watched request (method in ``methods``, path starting with one of
``paths``; all paths by default) it generates an ``event_id``, returns it
in the ``X-Mlwatch-Event-Id`` response header (so the caller can send the
label later) and, once the response is sent, logs the latency, the status
(``error`` for a 5xx answer or an exception), the features and the
prediction. Features and prediction are what the endpoint gave
`annotate` (``mlwatch.annotate(features=..., prediction=...)``), else, for
JSON bodies up to ``max_body_bytes``, the request's scalar fields as
features and the response's ``score`` / ``label`` / ``value`` / ``scores``
as the prediction. `current_event_id` gives the endpoint its event id.

When the server shuts down (ASGI lifespan), the monitor is flushed for at
most ``flush_on_shutdown`` seconds before the server is told shutdown is
complete.

Logging never fails a request: an event that does not validate is counted
in ``monitor.stats().invalid`` and logged as a warning.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional

from .monitor import Monitor, default_prediction, log, new_event_id
from .validate import ValidationError, check_features, check_prediction

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = "x-mlwatch-event-id"


class _Record:
    __slots__ = ("event_id", "features", "prediction", "tags", "model", "model_version", "skip")

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        self.features: Optional[Mapping[str, Any]] = None
        self.prediction: Optional[Mapping[str, Any]] = None
        self.tags: Optional[Mapping[str, str]] = None
        self.model: Optional[str] = None
        self.model_version: Optional[str] = None
        self.skip = False


_current: contextvars.ContextVar[Optional[_Record]] = contextvars.ContextVar("mlwatch_record", default=None)


def current_event_id() -> Optional[str]:
    """The event id of the request being handled (inside `MlwatchMiddleware`)."""
    r = _current.get()
    return r.event_id if r else None


def annotate(
    *,
    features: Optional[Mapping[str, Any]] = None,
    prediction: Optional[Mapping[str, Any]] = None,
    tags: Optional[Mapping[str, str]] = None,
    model: Optional[str] = None,
    model_version: Optional[str] = None,
    skip: bool = False,
) -> Optional[str]:
    """Gives the current request's event its features, prediction, tags or
    model (``skip=True``: log nothing for it). Returns the event id, or None
    outside the middleware."""
    r = _current.get()
    if r is None:
        return None
    if features is not None:
        r.features = features
    if prediction is not None:
        r.prediction = prediction
    if tags is not None:
        r.tags = tags
    if model is not None:
        r.model = model
    if model_version is not None:
        r.model_version = model_version
    r.skip = r.skip or skip
    return r.event_id


class MlwatchMiddleware:
    """Pure ASGI middleware (no body buffering beyond ``max_body_bytes``)."""

    def __init__(
        self,
        app: ASGIApp,
        monitor: Monitor,
        *,
        model: Optional[str] = None,
        model_version: Optional[str] = None,
        paths: Optional[Iterable[str]] = None,
        methods: Iterable[str] = ("POST",),
        capture_bodies: bool = True,
        max_body_bytes: int = 65536,
        header: str = HEADER,
        flush_on_shutdown: Optional[float] = 10.0,
    ) -> None:
        self.app = app
        self.flush_on_shutdown = flush_on_shutdown
        self.monitor = monitor
        self.model = model
        self.model_version = model_version
        self.paths = tuple(paths) if paths is not None else None
        self.methods = frozenset(m.upper() for m in methods)
        self.capture = capture_bodies
        self.max_body = max_body_bytes
        self.header = header.lower().encode("latin-1")

    def _watched(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method", "GET") not in self.methods:
            return False
        return self.paths is None or any(scope.get("path", "").startswith(p) for p in self.paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.flush_on_shutdown is not None:
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if not self._watched(scope):
            await self.app(scope, receive, send)
            return
        record = _Record(new_event_id())
        token = _current.set(record)
        start = time.perf_counter()
        request_body: List[bytes] = []
        response_body: List[bytes] = []
        sizes = [0, 0]
        state: Dict[str, Any] = {"status": 500, "json": False}
        capture = self.capture
        limit = self.max_body

        async def receive_wrapper() -> Message:
            message = await receive()
            if capture and message["type"] == "http.request" and sizes[0] <= limit:
                chunk = message.get("body", b"")
                sizes[0] += len(chunk)
                if sizes[0] <= limit:
                    request_body.append(chunk)
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = list(message.get("headers", ()))
                for k, v in headers:
                    if k.lower() == b"content-type":
                        state["json"] = b"json" in v.lower()
                headers.append((self.header, record.event_id.encode()))
                message = dict(message)
                message["headers"] = headers
            elif message["type"] == "http.response.body" and capture and state["json"] and sizes[1] <= limit:
                chunk = message.get("body", b"")
                sizes[1] += len(chunk)
                if sizes[1] <= limit:
                    response_body.append(chunk)
            await send(message)

        error: Optional[str] = None
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"[:1024]
            raise
        finally:
            latency = (time.perf_counter() - start) * 1000.0
            _current.reset(token)
            if not record.skip:
                self._log(scope, record, latency, state["status"], error,
                          request_body if sizes[0] <= limit else None,
                          response_body if sizes[1] <= limit else None)

    def _lifespan_send(self, send: Send) -> Send:
        """Flushes the monitor when the server shuts down (uvicorn ends a
        SIGTERM by re-raising it, so exit handlers may never run)."""
        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.monitor.flush, self.flush_on_shutdown)
            await send(message)
        return lifespan_send

    def _log(self, scope: Scope, r: _Record, latency: float, status: int, error: Optional[str],
             request_body: Optional[List[bytes]], response_body: Optional[List[bytes]]) -> None:
        try:
            features = r.features
            if features is None and request_body:
                features = _scalar_fields(request_body)
            prediction = r.prediction
            if prediction is None and response_body:
                parsed = _parse(response_body)
                prediction = default_prediction(parsed) if isinstance(parsed, Mapping) else None
                if prediction is not None:
                    try:
                        check_prediction(r.event_id, prediction)
                    except ValidationError:
                        prediction = None  # a response that is not a prediction
            if features is not None and r.features is None:
                try:
                    check_features(r.event_id, features)
                except ValidationError:
                    features = None
            failed = error is not None or status >= 500
            self.monitor.log_inference(
                event_id=r.event_id,
                model=r.model or self.model,
                model_version=r.model_version or self.model_version,
                endpoint=_endpoint(scope),
                latency_ms=latency,
                status="error" if failed else "ok",
                error=error if error is not None else (f"HTTP {status}" if failed else None),
                prediction=prediction,
                features=features,
                tags=r.tags,
            )
        except ValidationError as e:
            log.warning("mlwatch: request not logged: %s", e)
        except Exception:  # never fail the request
            log.exception("mlwatch: request not logged")


def _endpoint(scope: Scope) -> str:
    """The matched route's path template (``predict/{model}``: low
    cardinality, as the collector's metrics want), else the request path;
    without the leading ``/``."""
    route = scope.get("route")
    path = getattr(route, "path", None) if route is not None else None
    if not isinstance(path, str):
        path = scope.get("path", "/")
    return path.lstrip("/") or "/"


def _parse(chunks: List[bytes]) -> Any:
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return None


def _scalar_fields(chunks: List[bytes]) -> Optional[Dict[str, Any]]:
    body = _parse(chunks)
    if not isinstance(body, dict):
        return None
    return {k: v for k, v in body.items() if v is None or isinstance(v, (str, bool, int, float))}
