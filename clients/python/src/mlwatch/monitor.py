"""`Monitor`: logs inference and label events without blocking the caller.

``log_inference`` / ``log_label`` check the event (raising `ValidationError`
naming the event and the field), append it to a bounded in-memory queue and
return at once. One background thread takes up to ``batch_size`` events at
a time (waiting at most ``flush_interval`` seconds for a batch to fill),
sends them to the collector's batch endpoints (``POST /v1/inferences``,
``POST /v1/labels``, JSON Lines bodies) over one keep-alive connection, and
retries a batch answered 429 or 503, any 5xx, or not answered at all, with
exponential backoff (from ``initial_backoff``, doubling, capped at
``max_backoff``, never shorter than the collector's ``Retry-After``, plus up
to 20 % jitter), for as long as it takes (or ``max_retries``).

Drop policy: when ``max_queue`` events are waiting, a new event is dropped
(the newest, never one already queued) and counted in
``stats().dropped_queue_full``; ``log_*`` returns ``False``-y information
through ``stats()`` only, it never blocks and never raises for a full queue.
So while the collector is away, the events that fit in the queue (plus the
batch being retried) are delivered once it is back, and the rest are
counted.

Events the collector rejects (its limits are configurable) are counted in
``stats().rejected`` and kept, the latest ``keep_rejections``, in
``rejections()`` with their event id, field and reason.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import functools
import inspect
import logging
import random
import threading
import time
import uuid
from typing import Any, Callable, Deque, Dict, List, Mapping, NamedTuple, Optional, Tuple, TypeVar

from . import validate
from .transport import INFERENCE, LABEL, GrpcTransport, HttpTransport
from .validate import ValidationError

log = logging.getLogger("mlwatch")



@dataclasses.dataclass(frozen=True)
class Stats:
    """Counters of one `Monitor` since it was made (a snapshot)."""

    #: Events accepted into the queue by ``log_inference`` / ``log_label``.
    logged: int
    #: Events waiting in the queue now.
    queued: int
    #: Events taken by the sender and not yet answered.
    in_flight: int
    #: Events the collector accepted (they are on the broker).
    delivered: int
    #: Events the collector rejected (see `Monitor.rejections`).
    rejected: int
    #: Events dropped because the queue was full (the drop policy).
    dropped_queue_full: int
    #: Events refused before queueing (`ValidationError`), also by the middleware.
    invalid: int
    #: Events given up on: non-retryable answers (401, 404, ...), ``max_retries``
    #: spent, or still unsent when ``close`` / exit ran out of time.
    failed: int
    #: Requests sent, and those retried (429, 503, 5xx, no answer).
    requests: int
    retries: int
    #: The last transport problem or unexpected answer, if any.
    last_error: Optional[str]


class Rejection(NamedTuple):
    """An event the collector refused."""

    kind: str
    event_id: Optional[str]
    field: str
    reason: str


class Tracked(NamedTuple):
    """What a function decorated with `Monitor.track` returns."""

    result: Any
    event_id: str


F = TypeVar("F", bound=Callable[..., Any])


def new_event_id() -> str:
    """A fresh event id (UUID4, 32 hex digits)."""
    return uuid.uuid4().hex


class Monitor:
    """Sends events to an mlwatch collector from a background thread.

    ``url`` is the collector's HTTP ingest address (``http://host:8080``),
    ``token`` a bearer token when the collector requires one. ``model`` and
    ``model_version`` are defaults for events that do not name them.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        model: Optional[str] = None,
        model_version: Optional[str] = None,
        max_queue: int = 100_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_retries: Optional[int] = None,
        timeout: float = 30.0,
        flush_at_exit: Optional[float] = 10.0,
        keep_rejections: int = 1000,
        transport: str = "http",
        grpc_secure: bool = False,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be at least 1")
        self.url = url
        self.model = model
        self.model_version = model_version
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_retries = max_retries
        self._transport: Any
        if transport == "http":
            self._transport = HttpTransport(url, token, timeout)
        elif transport == "grpc":
            self._transport = GrpcTransport(url, token, timeout, secure=grpc_secure)
        else:
            raise ValueError(f"transport: expected \"http\" or \"grpc\", found {transport!r}")
        self._queue: Deque[Tuple[str, Dict[str, Any]]] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._in_flight = 0
        self._flushing = 0
        self._closing = False
        self._give_up_at: Optional[float] = None
        self._rejections: Deque[Rejection] = collections.deque(maxlen=keep_rejections)
        self._counts = dict.fromkeys(
            ("logged", "delivered", "rejected", "dropped_queue_full", "invalid", "failed", "requests", "retries"),
            0,
        )
        self._last_error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name="mlwatch-sender", daemon=True)
        self._thread.start()
        self._flush_at_exit = flush_at_exit
        if flush_at_exit is not None:
            atexit.register(self._at_exit)

    # --- logging (the caller's thread) --------------------------------

    def log_inference(
        self,
        *,
        latency_ms: float,
        model: Optional[str] = None,
        event_id: Optional[str] = None,
        model_version: Optional[str] = None,
        endpoint: Optional[str] = None,
        timestamp: Any = None,
        status: str = "ok",
        error: Optional[str] = None,
        batch_size: Optional[int] = None,
        prediction: Optional[Mapping[str, Any]] = None,
        features: Optional[Mapping[str, Any]] = None,
        tags: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Queues an inference event; returns its ``event_id`` (generated when not given).

        ``timestamp``: epoch milliseconds, an aware ``datetime`` or an RFC 3339
        string; now when absent. Raises `ValidationError` for an event the
        collector could not accept; never blocks.
        """
        eid = event_id if event_id is not None else new_event_id()
        event: Dict[str, Any] = {"event_id": eid, "model": model or self.model, "latency_ms": latency_ms}
        version = model_version or self.model_version
        if version is not None:
            event["model_version"] = version
        if endpoint is not None:
            event["endpoint"] = endpoint
        event["status"] = status
        if error is not None:
            event["error"] = error
        if batch_size is not None:
            event["batch_size"] = batch_size
        if prediction is not None:
            event["prediction"] = dict(prediction)
        if features is not None:
            event["features"] = dict(features)
        if tags is not None:
            event["tags"] = dict(tags)
        try:
            event["timestamp"] = self._timestamp(eid, timestamp)
            validate.inference(event)
        except ValidationError:
            self._count("invalid")
            raise
        self._enqueue(INFERENCE, event)
        return eid

    def log_label(
        self,
        *,
        event_id: str,
        label: Any = None,
        value: Optional[float] = None,
        model: Optional[str] = None,
        timestamp: Any = None,
    ) -> None:
        """Queues the ground truth of an earlier prediction (``label`` or ``value``)."""
        event: Dict[str, Any] = {"event_id": event_id, "model": model or self.model}
        if label is not None:
            event["label"] = label
        if value is not None:
            event["value"] = value
        try:
            event["timestamp"] = self._timestamp(event_id, timestamp)
            validate.label(event)
        except ValidationError:
            self._count("invalid")
            raise
        self._enqueue(LABEL, event)

    @staticmethod
    def _timestamp(eid: str, ts: Any) -> Any:
        if ts is None:
            return int(time.time() * 1000)
        if isinstance(ts, str):
            return ts
        return validate.timestamp_ms(eid, ts)

    def _enqueue(self, kind: str, event: Dict[str, Any]) -> bool:
        with self._cond:
            if len(self._queue) >= self.max_queue or self._closing:
                self._counts["dropped_queue_full" if not self._closing else "failed"] += 1
                return False
            self._queue.append((kind, event))
            self._counts["logged"] += 1
            n = len(self._queue)
            if n == 1 or n >= self.batch_size:
                self._cond.notify_all()
            return True

    def _count(self, name: str, n: int = 1) -> None:
        with self._cond:
            self._counts[name] += n

    # --- decorator -------------------------------------------------------

    def track(
        self,
        func: Optional[F] = None,
        *,
        model: Optional[str] = None,
        model_version: Optional[str] = None,
        endpoint: Optional[str] = None,
        features: Optional[Callable[..., Optional[Mapping[str, Any]]]] = None,
        prediction: Optional[Callable[[Any], Optional[Mapping[str, Any]]]] = None,
    ) -> Any:
        """Decorates a predict function (sync or async) to log each call.

        The wrapped function returns ``Tracked(result, event_id)``; the event
        carries the call's latency, ``status`` ``error`` when it raised (the
        exception is re-raised, with ``mlwatch_event_id`` set on it), the
        features (``features(*args, **kwargs)``, by default the first mapping
        argument or the ``features`` keyword) and the prediction
        (``prediction(result)``, by default a mapping result's ``score`` /
        ``label`` / ``value`` / ``scores``, a float as ``value``, a string,
        integer or bool as ``label``). Logging never raises into the caller.
        """
        def decorate(fn: F) -> F:
            name = endpoint or getattr(fn, "__name__", "predict")

            def record(eid: str, start: float, args: Any, kwargs: Any, result: Any, exc: Optional[BaseException]) -> None:
                latency = (time.perf_counter() - start) * 1000.0
                try:
                    feats = features(*args, **kwargs) if features else default_features(args, kwargs)
                    pred = None
                    if exc is None:
                        pred = prediction(result) if prediction else default_prediction(result)
                    self.log_inference(
                        event_id=eid, model=model, model_version=model_version, endpoint=name,
                        latency_ms=latency, status="ok" if exc is None else "error",
                        error=None if exc is None else f"{type(exc).__name__}: {exc}"[:1024],
                        prediction=pred, features=feats,
                    )
                except ValidationError as e:
                    log.warning("mlwatch: not logged: %s", e)
                except Exception:  # never break the caller
                    log.exception("mlwatch: not logged")

            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def awrapper(*args: Any, **kwargs: Any) -> Tracked:
                    eid, start = new_event_id(), time.perf_counter()
                    try:
                        result = await fn(*args, **kwargs)
                    except BaseException as e:
                        record(eid, start, args, kwargs, None, e)
                        _tag(e, eid)
                        raise
                    record(eid, start, args, kwargs, result, None)
                    return Tracked(result, eid)
                return awrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Tracked:
                eid, start = new_event_id(), time.perf_counter()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as e:
                    record(eid, start, args, kwargs, None, e)
                    _tag(e, eid)
                    raise
                record(eid, start, args, kwargs, result, None)
                return Tracked(result, eid)
            return wrapper  # type: ignore[return-value]

        return decorate(func) if func is not None else decorate

    # --- flushing, closing, counters ---------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Sends what is queued now without waiting for batches to fill; waits
        until the queue is empty and nothing is in flight, or ``timeout``
        seconds. Returns whether everything was answered."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._queue or self._in_flight:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: Optional[float] = 10.0) -> bool:
        """Flushes (for at most ``timeout`` seconds), then stops the sender;
        events still unsent are counted as failed. Returns whether all were sent."""
        drained = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._give_up_at = time.monotonic()
            self._cond.notify_all()
        self._thread.join(None if timeout is None else max(timeout, 1.0))
        with self._cond:
            if self._queue:
                self._counts["failed"] += len(self._queue)
                self._queue.clear()
        self._transport.close()
        if self._flush_at_exit is not None:
            atexit.unregister(self._at_exit)
        return drained

    def _at_exit(self) -> None:
        self.close(self._flush_at_exit)

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stats(self) -> Stats:
        """The counters now (see `Stats`)."""
        with self._cond:
            return Stats(
                queued=len(self._queue), in_flight=self._in_flight, last_error=self._last_error, **self._counts
            )

    def rejections(self) -> List[Rejection]:
        """The latest events the collector rejected, oldest first."""
        with self._cond:
            return list(self._rejections)

    # --- the sender thread ---------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                linger_until = time.monotonic() + self.flush_interval
                while len(self._queue) < self.batch_size and not self._closing and not self._flushing:
                    remaining = linger_until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                take = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(take)]
                self._in_flight = take
            try:
                self._send_batch(batch)
            except Exception as e:  # a bug here must not kill the sender
                log.exception("mlwatch: batch lost")
                with self._cond:
                    self._counts["failed"] += len(batch)
                    self._last_error = repr(e)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def _send_batch(self, batch: List[Tuple[str, Dict[str, Any]]]) -> None:
        # Inferences first, so a label never goes ahead of its prediction.
        inferences = [e for k, e in batch if k == INFERENCE]
        labels = [e for k, e in batch if k == LABEL]
        if inferences:
            self._deliver(INFERENCE, inferences)
        if labels:
            self._deliver(LABEL, labels)

    def _deliver(self, kind: str, events: List[Dict[str, Any]]) -> None:
        backoff = self.initial_backoff
        attempt = 0
        while True:
            outcome = self._transport.send(kind, events)
            with self._cond:
                self._counts["requests"] += 1
            if outcome.answer is not None:
                self._answered(kind, events, outcome.answer)
                return
            if outcome.too_large and len(events) > 1:
                half = len(events) // 2
                self._deliver(kind, events[:half])
                self._deliver(kind, events[half:])
                return
            with self._cond:
                self._last_error = outcome.problem
                give_up = (
                    not outcome.retryable
                    or (self.max_retries is not None and attempt >= self.max_retries)
                    or (self._give_up_at is not None and time.monotonic() >= self._give_up_at)
                )
                if give_up:
                    self._counts["failed"] += len(events)
                    log.error("mlwatch: %d %s events not delivered: %s", len(events), kind, outcome.problem)
                    return
                self._counts["retries"] += 1
            delay = max(backoff, outcome.retry_after) * (1.0 + 0.2 * random.random())
            backoff = min(backoff * 2.0, self.max_backoff)
            attempt += 1
            with self._cond:
                # Wakes early only when close() gives up on the collector.
                self._cond.wait_for(lambda: self._give_up_at is not None, timeout=delay)

    def _answered(self, kind: str, events: List[Dict[str, Any]], answer: Mapping[str, Any]) -> None:
        rejected = answer.get("rejected") or []
        with self._cond:
            self._counts["delivered"] += int(answer.get("accepted", 0))
            self._counts["rejected"] += len(rejected)
            for r in rejected:
                index = r.get("index")
                eid = events[index].get("event_id") if isinstance(index, int) and 0 <= index < len(events) else None
                rej = Rejection(kind, eid, str(r.get("field", "")), str(r.get("reason", "")))
                self._rejections.append(rej)
                log.warning("mlwatch: collector rejected %s event %r: %s: %s", kind, eid, rej.field, rej.reason)


def _tag(e: BaseException, eid: str) -> None:
    try:
        e.mlwatch_event_id = eid  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - some exceptions refuse attributes
        pass


def default_features(args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The ``features`` keyword, else the first mapping argument, keeping scalar values."""
    source = kwargs.get("features")
    if source is None:
        source = next((a for a in args if isinstance(a, Mapping)), None)
    if not isinstance(source, Mapping):
        return None
    return {str(k): v for k, v in source.items() if v is None or isinstance(v, (str, bool, int, float))}


def default_prediction(result: Any) -> Optional[Dict[str, Any]]:
    """A result as a prediction: mapping keys ``score`` / ``label`` / ``value`` /
    ``scores``; a float as ``value``; a string, integer or bool as ``label``."""
    if isinstance(result, Mapping):
        p = {k: result[k] for k in validate.PREDICTION_FIELDS if k in result}
        return p or None
    if isinstance(result, float):
        return {"value": result}
    if isinstance(result, (str, int, bool)):
        return {"label": result}
    return None
