"""Checks an event before it is queued, with the collector's field paths.

The collector remains the judge (its limits are configurable: lengths,
counts, how far back a timestamp may be); here the client refuses what no
collector accepts (wrong types, missing fields, negative or non-finite
latency, probabilities outside [0, 1], unknown prediction fields), so a bug
in the caller surfaces at the call, naming the event and the field, instead
of as a rejection counted later.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Dict, Mapping, Optional

PREDICTION_FIELDS = ("score", "label", "value", "scores")


class ValidationError(ValueError):
    """An event the collector would reject: which event, which field, why."""

    def __init__(self, event_id: Optional[str], field: str, reason: str) -> None:
        where = f"event {event_id!r}" if event_id else "event"
        super().__init__(f"{where}: {field or 'event'}: {reason}")
        self.event_id = event_id
        self.field = field
        self.reason = reason


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "an array"
    if isinstance(v, Mapping):
        return "an object"
    return f"a {type(v).__name__}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _id(event_id: Optional[str], field: str, v: Any, required: bool = True) -> None:
    if v is None or v == "":
        if required:
            raise ValidationError(event_id, field, "missing required field")
        return
    if not isinstance(v, str):
        raise ValidationError(event_id, field, f"expected a string, found {_kind(v)}")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in v):
        raise ValidationError(event_id, field, "contains control characters")


def timestamp_ms(event_id: Optional[str], v: Any) -> Optional[int]:
    """Epoch milliseconds from an int, a datetime or an RFC 3339 string."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValidationError(event_id, "timestamp", "expected epoch milliseconds or RFC 3339, found a bool")
    if isinstance(v, int):
        return v
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            raise ValidationError(event_id, "timestamp", "a datetime needs a time zone")
        return int(v.timestamp() * 1000)
    if isinstance(v, str):
        return None if _rfc3339(v) else _bad_time(event_id, v)
    raise ValidationError(event_id, "timestamp", f"expected epoch milliseconds or RFC 3339, found {_kind(v)}")


def _bad_time(event_id: Optional[str], v: str) -> Optional[int]:
    raise ValidationError(event_id, "timestamp", f"not an RFC 3339 timestamp: {v!r}")


def _rfc3339(s: str) -> bool:
    return rfc3339_ms(s) is not None


def rfc3339_ms(s: str) -> Optional[int]:
    """Epoch milliseconds of an RFC 3339 timestamp with a zone, else None."""
    if len(s) < 20 or s[10] not in "Tt ":
        return None
    text = s[:-1] + "+00:00" if s[-1] in "Zz" else s
    try:
        parsed = _dt.datetime.fromisoformat(text.replace("t", "T", 1))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return (parsed - _EPOCH) // _dt.timedelta(milliseconds=1)


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _finite(event_id: Optional[str], field: str, v: float) -> None:
    if not math.isfinite(v):
        raise ValidationError(event_id, field, f"must be finite, found {v}")


def _finite_number(event_id: Optional[str], field: str, v: Any) -> None:
    if not _is_number(v):
        raise ValidationError(event_id, field, f"expected a number, found {_kind(v)}")
    _finite(event_id, field, v)


def _probability(event_id: Optional[str], field: str, p: Any) -> None:
    if not _is_number(p):
        raise ValidationError(event_id, field, f"expected a number, found {_kind(p)}")
    if not (0.0 <= p <= 1.0):
        raise ValidationError(event_id, field, f"expected a probability in [0, 1], found {p}")


def _class_label(event_id: Optional[str], field: str, v: Any) -> None:
    if isinstance(v, (str, bool, int)) and not isinstance(v, float):
        return
    raise ValidationError(
        event_id, field, f"expected a class label (string, integer or bool), found {_kind(v)}"
    )


def check_prediction(event_id: Optional[str], p: Any) -> None:
    if p is None:
        return
    if not isinstance(p, Mapping):
        raise ValidationError(event_id, "prediction", f"expected an object, found {_kind(p)}")
    for k in p:
        if k not in PREDICTION_FIELDS:
            raise ValidationError(event_id, f"prediction.{k}", "unknown field")
    if p.get("score") is not None:
        _probability(event_id, "prediction.score", p["score"])
    if p.get("label") is not None:
        _class_label(event_id, "prediction.label", p["label"])
    if p.get("value") is not None:
        _finite_number(event_id, "prediction.value", p["value"])
    scores = p.get("scores")
    if scores is not None:
        if not isinstance(scores, Mapping):
            raise ValidationError(event_id, "prediction.scores", f"expected an object, found {_kind(scores)}")
        for cls, s in scores.items():
            _probability(event_id, f"prediction.scores.{cls}", s)


def check_features(event_id: Optional[str], features: Any) -> None:
    if features is None:
        return
    if not isinstance(features, Mapping):
        raise ValidationError(event_id, "features", f"expected an object, found {_kind(features)}")
    for name, v in features.items():
        if not isinstance(name, str):
            raise ValidationError(event_id, f"features.{name}", "feature names are strings")
        if v is None or isinstance(v, (str, bool)):
            continue
        if _is_number(v):
            _finite(event_id, f"features.{name}", v)
            continue
        raise ValidationError(
            event_id, f"features.{name}", f"expected a number, string, bool or null, found {_kind(v)}"
        )


def check_tags(event_id: Optional[str], tags: Any) -> None:
    if tags is None:
        return
    if not isinstance(tags, Mapping):
        raise ValidationError(event_id, "tags", f"expected an object, found {_kind(tags)}")
    for name, v in tags.items():
        if not isinstance(v, str):
            raise ValidationError(event_id, f"tags.{name}", f"expected a string, found {_kind(v)}")


def inference(event: Dict[str, Any]) -> None:
    """Checks an inference event (a dict in the DESIGN.md shape)."""
    eid = event.get("event_id")
    _id(eid if isinstance(eid, str) else None, "event_id", eid)
    _id(eid, "model", event.get("model"))
    _id(eid, "model_version", event.get("model_version"), required=False)
    _id(eid, "endpoint", event.get("endpoint"), required=False)
    latency = event.get("latency_ms")
    if latency is None:
        raise ValidationError(eid, "latency_ms", "missing required field")
    _finite_number(eid, "latency_ms", latency)
    if latency < 0:
        raise ValidationError(eid, "latency_ms", f"must not be negative, found {latency}")
    status = event.get("status")
    if status not in (None, "ok", "error"):
        raise ValidationError(eid, "status", f'expected "ok" or "error", found {status!r}')
    if event.get("error") is not None and not isinstance(event["error"], str):
        raise ValidationError(eid, "error", f"expected a string, found {_kind(event['error'])}")
    bs = event.get("batch_size")
    if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1 or bs >= 2**32):
        raise ValidationError(eid, "batch_size", f"expected a positive integer, found {bs!r}")
    timestamp_ms(eid, event.get("timestamp"))
    check_prediction(eid, event.get("prediction"))
    check_features(eid, event.get("features"))
    check_tags(eid, event.get("tags"))


def label(event: Dict[str, Any]) -> None:
    """Checks a label event: ``event_id``, ``model`` and one of ``label`` / ``value``."""
    eid = event.get("event_id")
    _id(eid if isinstance(eid, str) else None, "event_id", eid)
    _id(eid, "model", event.get("model"))
    lab, val = event.get("label"), event.get("value")
    if (lab is None) == (val is None):
        raise ValidationError(eid, "label", "exactly one of label and value must be given")
    if lab is not None:
        _class_label(eid, "label", lab)
    if val is not None:
        _finite_number(eid, "value", val)
    timestamp_ms(eid, event.get("timestamp"))
