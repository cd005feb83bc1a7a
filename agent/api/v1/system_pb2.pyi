import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("time",)
    TIME_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("agent_version", "api_version", "python_version", "grpc_version")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRPC_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    api_version: str
    python_version: str
    grpc_version: str
    def __init__(self, agent_version: _Optional[str] = ..., api_version: _Optional[str] = ..., python_version: _Optional[str] = ..., grpc_version: _Optional[str] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RuntimeBinary(_message.Message):
    __slots__ = ("name", "path", "version", "usable", "problem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    USABLE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    version: str
    usable: bool
    problem: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., version: _Optional[str] = ..., usable: _Optional[bool] = ..., problem: _Optional[str] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("hostname", "os", "kernel", "arch", "cpus", "memory_bytes", "runtimes", "default_runtime", "data_root", "images", "containers", "containers_running", "agent_version", "started_at", "cgroup_layout")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    DATA_ROOT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    CGROUP_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    os: str
    kernel: str
    arch: str
    cpus: int
    memory_bytes: int
    runtimes: _containers.RepeatedCompositeFieldContainer[RuntimeBinary]
    default_runtime: str
    data_root: str
    images: int
    containers: int
    containers_running: int
    agent_version: str
    started_at: _timestamp_pb2.Timestamp
    cgroup_layout: str
    def __init__(self, hostname: _Optional[str] = ..., os: _Optional[str] = ..., kernel: _Optional[str] = ..., arch: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., runtimes: _Optional[_Iterable[_Union[RuntimeBinary, _Mapping]]] = ..., default_runtime: _Optional[str] = ..., data_root: _Optional[str] = ..., images: _Optional[int] = ..., containers: _Optional[int] = ..., containers_running: _Optional[int] = ..., agent_version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cgroup_layout: _Optional[str] = ...) -> None: ...
