#!/usr/bin/env python3
"""Writes the seed corpus of the collector's fuzz targets (run from fuzz/).

proto_events: protobuf InferenceEvent / LabelEvent / IngestInferencesRequest
bytes, encoded by hand (field numbers from proto/proto/mlwatch/v1/*.proto).
json_events: request bodies in the DESIGN.md JSON shape (object, array,
JSON Lines) and a KServe V1 body.
"""
import json
import os
import struct


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def string(field, s):
    b = s.encode() if isinstance(s, str) else s
    return key(field, 2) + varint(len(b)) + b


def double(field, x):
    return key(field, 1) + struct.pack("<d", x)


def integer(field, n):
    return key(field, 0) + varint(n)


def entry(field, k, value_bytes):
    body = string(1, k) + value_bytes
    return string(field, body)


def feature(number=None, text=None, flag=None, missing=None):
    body = b""
    if number is not None:
        body += double(1, number)
    if text is not None:
        body += string(2, text)
    if flag is not None:
        body += integer(3, int(flag))
    if missing is not None:
        body += integer(4, int(missing))
    return string(2, body)


def inference(event_id="e1", model="fraud", extra=b""):
    prediction = double(1, 0.87) + string(2, "1") + entry(4, "a", double(2, 0.13)) + entry(4, "b", double(2, 0.87))
    return (
        string(1, event_id)
        + string(2, model)
        + string(3, "v3")
        + string(4, "predict")
        + integer(5, 1795723200123)
        + double(6, 12.5)
        + integer(7, 1)
        + integer(9, 1)
        + string(10, prediction)
        + entry(11, "amount", feature(number=120.5))
        + entry(11, "country", feature(text="DE"))
        + entry(11, "is_new", feature(flag=True))
        + entry(11, "age", feature(missing=True))
        + entry(12, "region", string(2, "eu"))
        + extra
    )


def label(event_id="e1"):
    return string(1, event_id) + string(2, "fraud") + integer(3, 1795723079957) + string(4, "1")


SEEDS = {
    "proto_events": {
        "inference": inference(),
        "inference_minimal": string(1, "e2") + string(2, "m") + double(6, 1.0),
        "inference_nan_latency": inference(extra=double(6, float("nan"))),
        "inference_unknown_group": inference(extra=key(101, 3) + integer(1, 1) + key(101, 4)),
        "label": label(),
        "label_value": string(1, "e3") + string(2, "m") + double(5, 2.5),
        "request": string(1, inference("r1")) + string(1, inference("r2")) + string(1, b"\x30\x01"),
        "request_labels": string(1, label("l1")) + string(1, label("l2")),
    },
    "json_events": {
        "object": json.dumps({"event_id": "b7c1e0", "model": "fraud", "model_version": "v3", "endpoint": "predict",
                              "timestamp": "2026-11-26T20:00:00.123Z", "latency_ms": 12.5, "status": "ok",
                              "batch_size": 1, "prediction": {"score": 0.87, "label": "1"},
                              "features": {"amount": 120.5, "country": "DE", "is_new": True, "age": None},
                              "tags": {"region": "eu"}}).encode(),
        "array": json.dumps([{"event_id": "a", "model": "m", "latency_ms": 1},
                             {"event_id": "b", "model": "m", "latency_ms": -1}]).encode(),
        "lines": b'{"event_id": "a", "model": "m", "latency_ms": 1}\n{"event_id": "b"\n'
                 b'{"event_id": "c", "model": "m", "timestamp": 1795723079957, "label": "1"}\n',
        "kserve_v1": json.dumps({"instances": [[6.8, 2.8], [5.1, 3.5]], "predictions": [1, 0]}).encode(),
        "resource": json.dumps({"model": "fraud", "queue_depth": 12, "gpu_utilization_percent": 71.5}).encode(),
    },
}

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for target, seeds in SEEDS.items():
        os.makedirs(os.path.join(here, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(here, target, name), "wb") as f:
                f.write(data)
