import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadAuditRequest(_message.Message):
    __slots__ = ("since", "user", "follow")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    user: str
    follow: bool
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user: _Optional[str] = ..., follow: _Optional[bool] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "time", "caller", "role", "rpc", "target", "result", "request_id", "line", "stage")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    caller: str
    role: str
    rpc: str
    target: str
    result: str
    request_id: str
    line: str
    stage: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., caller: _Optional[str] = ..., role: _Optional[str] = ..., rpc: _Optional[str] = ..., target: _Optional[str] = ..., result: _Optional[str] = ..., request_id: _Optional[str] = ..., line: _Optional[str] = ..., stage: _Optional[str] = ...) -> None: ...

class VerifyAuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyAuditResponse(_message.Message):
    __slots__ = ("ok", "entries", "files", "first_seq", "last_seq", "anchored", "broken_file", "broken_line", "broken_seq", "reason")
    OK_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    ANCHORED_FIELD_NUMBER: _ClassVar[int]
    BROKEN_FILE_FIELD_NUMBER: _ClassVar[int]
    BROKEN_LINE_FIELD_NUMBER: _ClassVar[int]
    BROKEN_SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    entries: int
    files: int
    first_seq: int
    last_seq: int
    anchored: bool
    broken_file: str
    broken_line: int
    broken_seq: int
    reason: str
    def __init__(self, ok: _Optional[bool] = ..., entries: _Optional[int] = ..., files: _Optional[int] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., anchored: _Optional[bool] = ..., broken_file: _Optional[str] = ..., broken_line: _Optional[int] = ..., broken_seq: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
