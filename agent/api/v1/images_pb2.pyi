import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransferState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_STATE_UNSPECIFIED: _ClassVar[TransferState]
    TRANSFER_STATE_WAITING: _ClassVar[TransferState]
    TRANSFER_STATE_DOWNLOADING: _ClassVar[TransferState]
    TRANSFER_STATE_EXTRACTING: _ClassVar[TransferState]
    TRANSFER_STATE_EXISTS: _ClassVar[TransferState]
    TRANSFER_STATE_DONE: _ClassVar[TransferState]
    TRANSFER_STATE_UPLOADING: _ClassVar[TransferState]
    TRANSFER_STATE_MOUNTED: _ClassVar[TransferState]

class ArchiveFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARCHIVE_FORMAT_UNSPECIFIED: _ClassVar[ArchiveFormat]
    ARCHIVE_FORMAT_DOCKER: _ClassVar[ArchiveFormat]
    ARCHIVE_FORMAT_OCI: _ClassVar[ArchiveFormat]
TRANSFER_STATE_UNSPECIFIED: TransferState
TRANSFER_STATE_WAITING: TransferState
TRANSFER_STATE_DOWNLOADING: TransferState
TRANSFER_STATE_EXTRACTING: TransferState
TRANSFER_STATE_EXISTS: TransferState
TRANSFER_STATE_DONE: TransferState
TRANSFER_STATE_UPLOADING: TransferState
TRANSFER_STATE_MOUNTED: TransferState
ARCHIVE_FORMAT_UNSPECIFIED: ArchiveFormat
ARCHIVE_FORMAT_DOCKER: ArchiveFormat
ARCHIVE_FORMAT_OCI: ArchiveFormat

class RegistryCredentials(_message.Message):
    __slots__ = ("username", "password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class PullImageRequest(_message.Message):
    __slots__ = ("reference", "platform", "credentials")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    platform: str
    credentials: RegistryCredentials
    def __init__(self, reference: _Optional[str] = ..., platform: _Optional[str] = ..., credentials: _Optional[_Union[RegistryCredentials, _Mapping]] = ...) -> None: ...

class TransferProgress(_message.Message):
    __slots__ = ("digest", "state", "current", "total")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    digest: str
    state: TransferState
    current: int
    total: int
    def __init__(self, digest: _Optional[str] = ..., state: _Optional[_Union[TransferState, str]] = ..., current: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class PullResolved(_message.Message):
    __slots__ = ("reference", "digest", "index_digest", "platform", "layers")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    INDEX_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    digest: str
    index_digest: str
    platform: str
    layers: _containers.RepeatedCompositeFieldContainer[ImageLayer]
    def __init__(self, reference: _Optional[str] = ..., digest: _Optional[str] = ..., index_digest: _Optional[str] = ..., platform: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[ImageLayer, _Mapping]]] = ...) -> None: ...

class PullFinished(_message.Message):
    __slots__ = ("image", "downloaded_bytes")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    image: Image
    downloaded_bytes: int
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., downloaded_bytes: _Optional[int] = ...) -> None: ...

class PullImageResponse(_message.Message):
    __slots__ = ("resolved", "progress", "finished")
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    resolved: PullResolved
    progress: TransferProgress
    finished: PullFinished
    def __init__(self, resolved: _Optional[_Union[PullResolved, _Mapping]] = ..., progress: _Optional[_Union[TransferProgress, _Mapping]] = ..., finished: _Optional[_Union[PullFinished, _Mapping]] = ...) -> None: ...

class PushImageRequest(_message.Message):
    __slots__ = ("reference", "credentials")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    credentials: RegistryCredentials
    def __init__(self, reference: _Optional[str] = ..., credentials: _Optional[_Union[RegistryCredentials, _Mapping]] = ...) -> None: ...

class PushFinished(_message.Message):
    __slots__ = ("reference", "digest", "uploaded_bytes")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    reference: str
    digest: str
    uploaded_bytes: int
    def __init__(self, reference: _Optional[str] = ..., digest: _Optional[str] = ..., uploaded_bytes: _Optional[int] = ...) -> None: ...

class PushImageResponse(_message.Message):
    __slots__ = ("progress", "finished")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    progress: TransferProgress
    finished: PushFinished
    def __init__(self, progress: _Optional[_Union[TransferProgress, _Mapping]] = ..., finished: _Optional[_Union[PushFinished, _Mapping]] = ...) -> None: ...

class CheckLoginRequest(_message.Message):
    __slots__ = ("registry", "credentials")
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    registry: str
    credentials: RegistryCredentials
    def __init__(self, registry: _Optional[str] = ..., credentials: _Optional[_Union[RegistryCredentials, _Mapping]] = ...) -> None: ...

class CheckLoginResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResolveImageRequest(_message.Message):
    __slots__ = ("reference", "platform", "credentials")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    platform: str
    credentials: RegistryCredentials
    def __init__(self, reference: _Optional[str] = ..., platform: _Optional[str] = ..., credentials: _Optional[_Union[RegistryCredentials, _Mapping]] = ...) -> None: ...

class ResolveImageResponse(_message.Message):
    __slots__ = ("reference", "digest", "size", "media_type", "index_digest", "platform")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    reference: str
    digest: str
    size: int
    media_type: str
    index_digest: str
    platform: str
    def __init__(self, reference: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., media_type: _Optional[str] = ..., index_digest: _Optional[str] = ..., platform: _Optional[str] = ...) -> None: ...

class ImageLayer(_message.Message):
    __slots__ = ("digest", "media_type", "size", "diff_id", "chain_id")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIFF_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    digest: str
    media_type: str
    size: int
    diff_id: str
    chain_id: str
    def __init__(self, digest: _Optional[str] = ..., media_type: _Optional[str] = ..., size: _Optional[int] = ..., diff_id: _Optional[str] = ..., chain_id: _Optional[str] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("id", "digest", "names", "media_type", "platform", "size", "content_size", "created", "index_digest", "layers", "in_use", "stored_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    INDEX_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    digest: str
    names: _containers.RepeatedScalarFieldContainer[str]
    media_type: str
    platform: str
    size: int
    content_size: int
    created: _timestamp_pb2.Timestamp
    index_digest: str
    layers: _containers.RepeatedCompositeFieldContainer[ImageLayer]
    in_use: bool
    stored_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., digest: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., media_type: _Optional[str] = ..., platform: _Optional[str] = ..., size: _Optional[int] = ..., content_size: _Optional[int] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., index_digest: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[ImageLayer, _Mapping]]] = ..., in_use: _Optional[bool] = ..., stored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class InspectImageRequest(_message.Message):
    __slots__ = ("reference",)
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    reference: str
    def __init__(self, reference: _Optional[str] = ...) -> None: ...

class InspectImageResponse(_message.Message):
    __slots__ = ("image", "config_json", "manifest_json")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    image: Image
    config_json: bytes
    manifest_json: bytes
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., config_json: _Optional[bytes] = ..., manifest_json: _Optional[bytes] = ...) -> None: ...

class TagImageRequest(_message.Message):
    __slots__ = ("source", "target")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class TagImageResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: Image
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class RemoveImageRequest(_message.Message):
    __slots__ = ("reference", "force")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    reference: str
    force: bool
    def __init__(self, reference: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class RemoveImageResponse(_message.Message):
    __slots__ = ("untagged", "deleted", "reclaimed_bytes")
    UNTAGGED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    RECLAIMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    untagged: _containers.RepeatedScalarFieldContainer[str]
    deleted: _containers.RepeatedScalarFieldContainer[str]
    reclaimed_bytes: int
    def __init__(self, untagged: _Optional[_Iterable[str]] = ..., deleted: _Optional[_Iterable[str]] = ..., reclaimed_bytes: _Optional[int] = ...) -> None: ...

class PruneImagesRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class PruneImagesResponse(_message.Message):
    __slots__ = ("deleted", "untagged", "reclaimed_bytes")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    UNTAGGED_FIELD_NUMBER: _ClassVar[int]
    RECLAIMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedScalarFieldContainer[str]
    untagged: _containers.RepeatedScalarFieldContainer[str]
    reclaimed_bytes: int
    def __init__(self, deleted: _Optional[_Iterable[str]] = ..., untagged: _Optional[_Iterable[str]] = ..., reclaimed_bytes: _Optional[int] = ...) -> None: ...

class ImagesDiskUsageRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImagesDiskUsageResponse(_message.Message):
    __slots__ = ("images", "images_active", "images_size", "images_reclaimable", "snapshots", "snapshots_size", "content_blobs", "content_size", "ingest_size")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_SIZE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_RECLAIMABLE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_BLOBS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    INGEST_SIZE_FIELD_NUMBER: _ClassVar[int]
    images: int
    images_active: int
    images_size: int
    images_reclaimable: int
    snapshots: int
    snapshots_size: int
    content_blobs: int
    content_size: int
    ingest_size: int
    def __init__(self, images: _Optional[int] = ..., images_active: _Optional[int] = ..., images_size: _Optional[int] = ..., images_reclaimable: _Optional[int] = ..., snapshots: _Optional[int] = ..., snapshots_size: _Optional[int] = ..., content_blobs: _Optional[int] = ..., content_size: _Optional[int] = ..., ingest_size: _Optional[int] = ...) -> None: ...

class SaveImagesRequest(_message.Message):
    __slots__ = ("references", "format")
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    references: _containers.RepeatedScalarFieldContainer[str]
    format: ArchiveFormat
    def __init__(self, references: _Optional[_Iterable[str]] = ..., format: _Optional[_Union[ArchiveFormat, str]] = ...) -> None: ...

class SaveImagesResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class LoadImagesRequest(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class LoadImagesResponse(_message.Message):
    __slots__ = ("images", "warnings")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportImageRequest(_message.Message):
    __slots__ = ("reference", "changes", "message", "chunk")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    reference: str
    changes: _containers.RepeatedScalarFieldContainer[str]
    message: str
    chunk: bytes
    def __init__(self, reference: _Optional[str] = ..., changes: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ImportImageResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: Image
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...
