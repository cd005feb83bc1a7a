import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateCsrRequest(_message.Message):
    __slots__ = ("common_name", "names")
    COMMON_NAME_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    common_name: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, common_name: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateCsrResponse(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class InstallCertificateRequest(_message.Message):
    __slots__ = ("certificate_pem", "ca_pem", "ca_cross_signed_pem")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CROSS_SIGNED_PEM_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    ca_pem: bytes
    ca_cross_signed_pem: bytes
    def __init__(self, certificate_pem: _Optional[bytes] = ..., ca_pem: _Optional[bytes] = ..., ca_cross_signed_pem: _Optional[bytes] = ...) -> None: ...

class InstallCertificateResponse(_message.Message):
    __slots__ = ("subject", "not_after", "ca_rotation_pending")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    CA_ROTATION_PENDING_FIELD_NUMBER: _ClassVar[int]
    subject: str
    not_after: _timestamp_pb2.Timestamp
    ca_rotation_pending: bool
    def __init__(self, subject: _Optional[str] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ca_rotation_pending: _Optional[bool] = ...) -> None: ...

class ConfirmCaRotationRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConfirmCaRotationResponse(_message.Message):
    __slots__ = ("ca_subject", "changed")
    CA_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ca_subject: str
    changed: bool
    def __init__(self, ca_subject: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...

class InstallCrlRequest(_message.Message):
    __slots__ = ("crl_pem",)
    CRL_PEM_FIELD_NUMBER: _ClassVar[int]
    crl_pem: bytes
    def __init__(self, crl_pem: _Optional[bytes] = ...) -> None: ...

class InstallCrlResponse(_message.Message):
    __slots__ = ("crl_number", "revoked", "changed")
    CRL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    crl_number: int
    revoked: int
    changed: bool
    def __init__(self, crl_number: _Optional[int] = ..., revoked: _Optional[int] = ..., changed: _Optional[bool] = ...) -> None: ...
