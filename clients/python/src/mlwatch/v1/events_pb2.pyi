from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferenceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INFERENCE_STATUS_UNSPECIFIED: _ClassVar[InferenceStatus]
    INFERENCE_STATUS_OK: _ClassVar[InferenceStatus]
    INFERENCE_STATUS_ERROR: _ClassVar[InferenceStatus]
INFERENCE_STATUS_UNSPECIFIED: InferenceStatus
INFERENCE_STATUS_OK: InferenceStatus
INFERENCE_STATUS_ERROR: InferenceStatus

class FeatureValue(_message.Message):
    __slots__ = ("number", "text", "flag", "missing")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    number: float
    text: str
    flag: bool
    missing: bool
    def __init__(self, number: _Optional[float] = ..., text: _Optional[str] = ..., flag: _Optional[bool] = ..., missing: _Optional[bool] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("score", "label", "value", "scores")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    score: float
    label: str
    value: float
    scores: _containers.ScalarMap[str, float]
    def __init__(self, score: _Optional[float] = ..., label: _Optional[str] = ..., value: _Optional[float] = ..., scores: _Optional[_Mapping[str, float]] = ...) -> None: ...

class InferenceEvent(_message.Message):
    __slots__ = ("event_id", "model", "model_version", "endpoint", "timestamp_ms", "latency_ms", "status", "error", "batch_size", "prediction", "features", "tags", "received_at_ms")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FeatureValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FeatureValue, _Mapping]] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    model: str
    model_version: str
    endpoint: str
    timestamp_ms: int
    latency_ms: float
    status: InferenceStatus
    error: str
    batch_size: int
    prediction: Prediction
    features: _containers.MessageMap[str, FeatureValue]
    tags: _containers.ScalarMap[str, str]
    received_at_ms: int
    def __init__(self, event_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., endpoint: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., latency_ms: _Optional[float] = ..., status: _Optional[_Union[InferenceStatus, str]] = ..., error: _Optional[str] = ..., batch_size: _Optional[int] = ..., prediction: _Optional[_Union[Prediction, _Mapping]] = ..., features: _Optional[_Mapping[str, FeatureValue]] = ..., tags: _Optional[_Mapping[str, str]] = ..., received_at_ms: _Optional[int] = ...) -> None: ...

class LabelEvent(_message.Message):
    __slots__ = ("event_id", "model", "timestamp_ms", "label", "value", "received_at_ms")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    model: str
    timestamp_ms: int
    label: str
    value: float
    received_at_ms: int
    def __init__(self, event_id: _Optional[str] = ..., model: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., label: _Optional[str] = ..., value: _Optional[float] = ..., received_at_ms: _Optional[int] = ...) -> None: ...
