from agent.api.v1 import images_pb2 as _images_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BlobDescriptor(_message.Message):
    __slots__ = ("digest", "size", "media_type")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    media_type: str
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., media_type: _Optional[str] = ...) -> None: ...

class DescribeImageRequest(_message.Message):
    __slots__ = ("reference",)
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    reference: str
    def __init__(self, reference: _Optional[str] = ...) -> None: ...

class DescribeImageResponse(_message.Message):
    __slots__ = ("manifest_digest", "blobs", "names", "image")
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    manifest_digest: str
    blobs: _containers.RepeatedCompositeFieldContainer[BlobDescriptor]
    names: _containers.RepeatedScalarFieldContainer[str]
    image: _images_pb2.Image
    def __init__(self, manifest_digest: _Optional[str] = ..., blobs: _Optional[_Iterable[_Union[BlobDescriptor, _Mapping]]] = ..., names: _Optional[_Iterable[str]] = ..., image: _Optional[_Union[_images_pb2.Image, _Mapping]] = ...) -> None: ...

class CheckBlobsRequest(_message.Message):
    __slots__ = ("blobs",)
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    blobs: _containers.RepeatedCompositeFieldContainer[BlobDescriptor]
    def __init__(self, blobs: _Optional[_Iterable[_Union[BlobDescriptor, _Mapping]]] = ...) -> None: ...

class BlobStatus(_message.Message):
    __slots__ = ("digest", "present", "offset")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    digest: str
    present: bool
    offset: int
    def __init__(self, digest: _Optional[str] = ..., present: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class CheckBlobsResponse(_message.Message):
    __slots__ = ("blobs",)
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    blobs: _containers.RepeatedCompositeFieldContainer[BlobStatus]
    def __init__(self, blobs: _Optional[_Iterable[_Union[BlobStatus, _Mapping]]] = ...) -> None: ...

class ReadBlobRequest(_message.Message):
    __slots__ = ("digest", "offset")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    digest: str
    offset: int
    def __init__(self, digest: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ReadBlobResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class WriteBlobHeader(_message.Message):
    __slots__ = ("digest", "size", "offset")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    offset: int
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class WriteBlobRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: WriteBlobHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[WriteBlobHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteBlobResponse(_message.Message):
    __slots__ = ("digest", "received", "already_present")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    digest: str
    received: int
    already_present: bool
    def __init__(self, digest: _Optional[str] = ..., received: _Optional[int] = ..., already_present: _Optional[bool] = ...) -> None: ...

class RegisterImageRequest(_message.Message):
    __slots__ = ("manifest_digest", "names")
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    manifest_digest: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, manifest_digest: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterImageResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _images_pb2.Image
    def __init__(self, image: _Optional[_Union[_images_pb2.Image, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("container", "reference", "message", "author", "changes", "no_pause")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NO_PAUSE_FIELD_NUMBER: _ClassVar[int]
    container: str
    reference: str
    message: str
    author: str
    changes: _containers.RepeatedScalarFieldContainer[str]
    no_pause: bool
    def __init__(self, container: _Optional[str] = ..., reference: _Optional[str] = ..., message: _Optional[str] = ..., author: _Optional[str] = ..., changes: _Optional[_Iterable[str]] = ..., no_pause: _Optional[bool] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("image", "layer")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    image: _images_pb2.Image
    layer: BlobDescriptor
    def __init__(self, image: _Optional[_Union[_images_pb2.Image, _Mapping]] = ..., layer: _Optional[_Union[BlobDescriptor, _Mapping]] = ...) -> None: ...

class ExportVolumeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ExportVolumeResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ImportVolumeHeader(_message.Message):
    __slots__ = ("name", "labels", "anonymous")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    anonymous: bool
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., anonymous: _Optional[bool] = ...) -> None: ...

class ImportVolumeRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ImportVolumeHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ImportVolumeHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImportVolumeResponse(_message.Message):
    __slots__ = ("name", "bytes", "created")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    bytes: int
    created: bool
    def __init__(self, name: _Optional[str] = ..., bytes: _Optional[int] = ..., created: _Optional[bool] = ...) -> None: ...

class RecreateContainerRequest(_message.Message):
    __slots__ = ("config_json", "image")
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    config_json: str
    image: str
    def __init__(self, config_json: _Optional[str] = ..., image: _Optional[str] = ...) -> None: ...

class RecreateContainerResponse(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...
