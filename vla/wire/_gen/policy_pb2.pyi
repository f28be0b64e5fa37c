from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("tensors", "strings", "request_id", "seed")
    class TensorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class StringsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.MessageMap[str, Tensor]
    strings: _containers.ScalarMap[str, str]
    request_id: str
    seed: int
    def __init__(self, tensors: _Optional[_Mapping[str, Tensor]] = ..., strings: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("actions", "server_timing_ms", "policy_timing_ms", "model_version", "request_id")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIMING_MS_FIELD_NUMBER: _ClassVar[int]
    POLICY_TIMING_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    actions: Tensor
    server_timing_ms: float
    policy_timing_ms: float
    model_version: str
    request_id: str
    def __init__(self, actions: _Optional[_Union[Tensor, _Mapping]] = ..., server_timing_ms: _Optional[float] = ..., policy_timing_ms: _Optional[float] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InputSpec(_message.Message):
    __slots__ = ("key", "dtype", "shape", "required", "description")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    key: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    required: bool
    description: str
    def __init__(self, key: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., required: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class ServerInfoResponse(_message.Message):
    __slots__ = ("model", "checkpoint", "chunk_length", "action_dim", "inputs", "image_orientation", "model_version", "metadata_json")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ACTION_DIM_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ORIENTATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    model: str
    checkpoint: str
    chunk_length: int
    action_dim: int
    inputs: _containers.RepeatedCompositeFieldContainer[InputSpec]
    image_orientation: str
    model_version: str
    metadata_json: str
    def __init__(self, model: _Optional[str] = ..., checkpoint: _Optional[str] = ..., chunk_length: _Optional[int] = ..., action_dim: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[InputSpec, _Mapping]]] = ..., image_orientation: _Optional[str] = ..., model_version: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...
