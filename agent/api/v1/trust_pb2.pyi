from agent.api.v1 import images_pb2 as _images_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrustRule(_message.Message):
    __slots__ = ("scope", "policy", "key_fingerprints", "digests", "line")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    policy: str
    key_fingerprints: _containers.RepeatedScalarFieldContainer[str]
    digests: _containers.RepeatedScalarFieldContainer[str]
    line: int
    def __init__(self, scope: _Optional[str] = ..., policy: _Optional[str] = ..., key_fingerprints: _Optional[_Iterable[str]] = ..., digests: _Optional[_Iterable[str]] = ..., line: _Optional[int] = ...) -> None: ...

class TrustPolicy(_message.Message):
    __slots__ = ("path", "present", "default_policy", "rules", "text", "sha256", "refused")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    path: str
    present: bool
    default_policy: str
    rules: _containers.RepeatedCompositeFieldContainer[TrustRule]
    text: str
    sha256: str
    refused: str
    def __init__(self, path: _Optional[str] = ..., present: _Optional[bool] = ..., default_policy: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[TrustRule, _Mapping]]] = ..., text: _Optional[str] = ..., sha256: _Optional[str] = ..., refused: _Optional[str] = ...) -> None: ...

class GetTrustPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTrustPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: TrustPolicy
    def __init__(self, policy: _Optional[_Union[TrustPolicy, _Mapping]] = ...) -> None: ...

class SetTrustPolicyRequest(_message.Message):
    __slots__ = ("text", "source")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    text: str
    source: str
    def __init__(self, text: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class SetTrustPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: TrustPolicy
    def __init__(self, policy: _Optional[_Union[TrustPolicy, _Mapping]] = ...) -> None: ...

class TrustVerdict(_message.Message):
    __slots__ = ("name", "image", "allowed", "scope", "policy", "reason", "key_fingerprint", "message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    image: str
    allowed: bool
    scope: str
    policy: str
    reason: str
    key_fingerprint: str
    message: str
    def __init__(self, name: _Optional[str] = ..., image: _Optional[str] = ..., allowed: _Optional[bool] = ..., scope: _Optional[str] = ..., policy: _Optional[str] = ..., reason: _Optional[str] = ..., key_fingerprint: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class VerifyImageRequest(_message.Message):
    __slots__ = ("reference",)
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    reference: str
    def __init__(self, reference: _Optional[str] = ...) -> None: ...

class VerifyImageResponse(_message.Message):
    __slots__ = ("reference", "digest", "allowed", "verdicts")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    digest: str
    allowed: bool
    verdicts: _containers.RepeatedCompositeFieldContainer[TrustVerdict]
    def __init__(self, reference: _Optional[str] = ..., digest: _Optional[str] = ..., allowed: _Optional[bool] = ..., verdicts: _Optional[_Iterable[_Union[TrustVerdict, _Mapping]]] = ...) -> None: ...

class PushSignatureRequest(_message.Message):
    __slots__ = ("reference", "signed_digest", "payload", "signature", "credentials")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SIGNED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    signed_digest: str
    payload: bytes
    signature: str
    credentials: _images_pb2.RegistryCredentials
    def __init__(self, reference: _Optional[str] = ..., signed_digest: _Optional[str] = ..., payload: _Optional[bytes] = ..., signature: _Optional[str] = ..., credentials: _Optional[_Union[_images_pb2.RegistryCredentials, _Mapping]] = ...) -> None: ...

class PushSignatureResponse(_message.Message):
    __slots__ = ("tag", "manifest_digest", "signatures", "already_present", "stored")
    TAG_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    tag: str
    manifest_digest: str
    signatures: int
    already_present: bool
    stored: int
    def __init__(self, tag: _Optional[str] = ..., manifest_digest: _Optional[str] = ..., signatures: _Optional[int] = ..., already_present: _Optional[bool] = ..., stored: _Optional[int] = ...) -> None: ...

class ImageSignature(_message.Message):
    __slots__ = ("signed_digest", "payload", "signature", "index", "source")
    SIGNED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    signed_digest: str
    payload: bytes
    signature: str
    index: bytes
    source: str
    def __init__(self, signed_digest: _Optional[str] = ..., payload: _Optional[bytes] = ..., signature: _Optional[str] = ..., index: _Optional[bytes] = ..., source: _Optional[str] = ...) -> None: ...

class ExportSignaturesRequest(_message.Message):
    __slots__ = ("reference",)
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    reference: str
    def __init__(self, reference: _Optional[str] = ...) -> None: ...

class ExportSignaturesResponse(_message.Message):
    __slots__ = ("image_digest", "signatures")
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    image_digest: str
    signatures: _containers.RepeatedCompositeFieldContainer[ImageSignature]
    def __init__(self, image_digest: _Optional[str] = ..., signatures: _Optional[_Iterable[_Union[ImageSignature, _Mapping]]] = ...) -> None: ...

class ImportSignaturesRequest(_message.Message):
    __slots__ = ("image_digest", "signatures")
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    image_digest: str
    signatures: _containers.RepeatedCompositeFieldContainer[ImageSignature]
    def __init__(self, image_digest: _Optional[str] = ..., signatures: _Optional[_Iterable[_Union[ImageSignature, _Mapping]]] = ...) -> None: ...

class ImportSignaturesResponse(_message.Message):
    __slots__ = ("added",)
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: int
    def __init__(self, added: _Optional[int] = ...) -> None: ...
