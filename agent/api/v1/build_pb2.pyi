from agent.api.v1 import images_pb2 as _images_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BuildOptions(_message.Message):
    __slots__ = ("dockerfile", "dockerfile_name", "tags", "build_args", "target", "no_cache", "platform", "labels", "registry_auth", "allow")
    class BuildArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RegistryAuthEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _images_pb2.RegistryCredentials
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_images_pb2.RegistryCredentials, _Mapping]] = ...) -> None: ...
    DOCKERFILE_FIELD_NUMBER: _ClassVar[int]
    DOCKERFILE_NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    BUILD_ARGS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_AUTH_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    dockerfile: str
    dockerfile_name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    build_args: _containers.ScalarMap[str, str]
    target: str
    no_cache: bool
    platform: str
    labels: _containers.ScalarMap[str, str]
    registry_auth: _containers.MessageMap[str, _images_pb2.RegistryCredentials]
    allow: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dockerfile: _Optional[str] = ..., dockerfile_name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., build_args: _Optional[_Mapping[str, str]] = ..., target: _Optional[str] = ..., no_cache: _Optional[bool] = ..., platform: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., registry_auth: _Optional[_Mapping[str, _images_pb2.RegistryCredentials]] = ..., allow: _Optional[_Iterable[str]] = ...) -> None: ...

class BuildRequest(_message.Message):
    __slots__ = ("options", "context_chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: BuildOptions
    context_chunk: bytes
    def __init__(self, options: _Optional[_Union[BuildOptions, _Mapping]] = ..., context_chunk: _Optional[bytes] = ...) -> None: ...

class BuildStep(_message.Message):
    __slots__ = ("number", "total", "instruction")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    number: int
    total: int
    instruction: str
    def __init__(self, number: _Optional[int] = ..., total: _Optional[int] = ..., instruction: _Optional[str] = ...) -> None: ...

class BuildOutput(_message.Message):
    __slots__ = ("line",)
    LINE_FIELD_NUMBER: _ClassVar[int]
    line: str
    def __init__(self, line: _Optional[str] = ...) -> None: ...

class BuildCached(_message.Message):
    __slots__ = ("number",)
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    number: int
    def __init__(self, number: _Optional[int] = ...) -> None: ...

class BuildLayer(_message.Message):
    __slots__ = ("digest", "size", "diff_size")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIFF_SIZE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    diff_size: int
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., diff_size: _Optional[int] = ...) -> None: ...

class BuildMessage(_message.Message):
    __slots__ = ("text", "warning")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    text: str
    warning: bool
    def __init__(self, text: _Optional[str] = ..., warning: _Optional[bool] = ...) -> None: ...

class BuildResult(_message.Message):
    __slots__ = ("image_id", "manifest_digest", "tags", "layers", "cached_steps", "run_steps")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    CACHED_STEPS_FIELD_NUMBER: _ClassVar[int]
    RUN_STEPS_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    manifest_digest: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    layers: int
    cached_steps: int
    run_steps: int
    def __init__(self, image_id: _Optional[str] = ..., manifest_digest: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., layers: _Optional[int] = ..., cached_steps: _Optional[int] = ..., run_steps: _Optional[int] = ...) -> None: ...

class BuildResponse(_message.Message):
    __slots__ = ("step", "output", "cached", "layer", "message", "result")
    STEP_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    step: BuildStep
    output: BuildOutput
    cached: BuildCached
    layer: BuildLayer
    message: BuildMessage
    result: BuildResult
    def __init__(self, step: _Optional[_Union[BuildStep, _Mapping]] = ..., output: _Optional[_Union[BuildOutput, _Mapping]] = ..., cached: _Optional[_Union[BuildCached, _Mapping]] = ..., layer: _Optional[_Union[BuildLayer, _Mapping]] = ..., message: _Optional[_Union[BuildMessage, _Mapping]] = ..., result: _Optional[_Union[BuildResult, _Mapping]] = ...) -> None: ...

class PruneBuildCacheRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PruneBuildCacheResponse(_message.Message):
    __slots__ = ("entries_removed",)
    ENTRIES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    entries_removed: int
    def __init__(self, entries_removed: _Optional[int] = ...) -> None: ...
