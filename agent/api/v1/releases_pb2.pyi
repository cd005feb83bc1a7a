import datetime

from agent.api.v1 import containers_pb2 as _containers_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReleasePhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELEASE_PHASE_UNSPECIFIED: _ClassVar[ReleasePhase]
    RELEASE_PHASE_STAGED: _ClassVar[ReleasePhase]
    RELEASE_PHASE_ACTIVATING: _ClassVar[ReleasePhase]
    RELEASE_PHASE_VERIFYING: _ClassVar[ReleasePhase]
    RELEASE_PHASE_HEALTHY: _ClassVar[ReleasePhase]
    RELEASE_PHASE_COMMITTED: _ClassVar[ReleasePhase]
    RELEASE_PHASE_UNCONFIRMED: _ClassVar[ReleasePhase]
    RELEASE_PHASE_REVERTED: _ClassVar[ReleasePhase]
    RELEASE_PHASE_FAILED: _ClassVar[ReleasePhase]
    RELEASE_PHASE_ROLLED_BACK: _ClassVar[ReleasePhase]

class RollbackTarget(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLBACK_TARGET_UNSPECIFIED: _ClassVar[RollbackTarget]
    ROLLBACK_TARGET_PREVIOUS: _ClassVar[RollbackTarget]
    ROLLBACK_TARGET_LAST_KNOWN_GOOD: _ClassVar[RollbackTarget]
RELEASE_PHASE_UNSPECIFIED: ReleasePhase
RELEASE_PHASE_STAGED: ReleasePhase
RELEASE_PHASE_ACTIVATING: ReleasePhase
RELEASE_PHASE_VERIFYING: ReleasePhase
RELEASE_PHASE_HEALTHY: ReleasePhase
RELEASE_PHASE_COMMITTED: ReleasePhase
RELEASE_PHASE_UNCONFIRMED: ReleasePhase
RELEASE_PHASE_REVERTED: ReleasePhase
RELEASE_PHASE_FAILED: ReleasePhase
RELEASE_PHASE_ROLLED_BACK: ReleasePhase
ROLLBACK_TARGET_UNSPECIFIED: RollbackTarget
ROLLBACK_TARGET_PREVIOUS: RollbackTarget
ROLLBACK_TARGET_LAST_KNOWN_GOOD: RollbackTarget

class ReleaseContainer(_message.Message):
    __slots__ = ("name", "config", "depends_on", "secrets", "update_lock")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_LOCK_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: _containers_pb2.ContainerConfig
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretFile]
    update_lock: bool
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[_containers_pb2.ContainerConfig, _Mapping]] = ..., depends_on: _Optional[_Iterable[str]] = ..., secrets: _Optional[_Iterable[_Union[SecretFile, _Mapping]]] = ..., update_lock: _Optional[bool] = ...) -> None: ...

class SecretFile(_message.Message):
    __slots__ = ("name", "version", "target", "mode", "uid", "gid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    target: str
    mode: int
    uid: int
    gid: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., target: _Optional[str] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ...) -> None: ...

class SecretMaterial(_message.Message):
    __slots__ = ("name", "version", "secret_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SECRET_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    secret_value: bytes
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., secret_value: _Optional[bytes] = ...) -> None: ...

class RevisionSpec(_message.Message):
    __slots__ = ("release", "containers", "spec_digest")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    SPEC_DIGEST_FIELD_NUMBER: _ClassVar[int]
    release: str
    containers: _containers.RepeatedCompositeFieldContainer[ReleaseContainer]
    spec_digest: str
    def __init__(self, release: _Optional[str] = ..., containers: _Optional[_Iterable[_Union[ReleaseContainer, _Mapping]]] = ..., spec_digest: _Optional[str] = ...) -> None: ...

class Revision(_message.Message):
    __slots__ = ("number", "spec", "created_at", "created_by", "rollout_id", "image_digests")
    class ImageDigestsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    number: int
    spec: RevisionSpec
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    rollout_id: str
    image_digests: _containers.ScalarMap[str, str]
    def __init__(self, number: _Optional[int] = ..., spec: _Optional[_Union[RevisionSpec, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., rollout_id: _Optional[str] = ..., image_digests: _Optional[_Mapping[str, str]] = ...) -> None: ...

class VerifyPolicy(_message.Message):
    __slots__ = ("min_healthy", "deadline", "start_first")
    MIN_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    START_FIRST_FIELD_NUMBER: _ClassVar[int]
    min_healthy: _duration_pb2.Duration
    deadline: _duration_pb2.Duration
    start_first: bool
    def __init__(self, min_healthy: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., deadline: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., start_first: _Optional[bool] = ...) -> None: ...

class ReleaseState(_message.Message):
    __slots__ = ("release", "phase", "active_revision", "previous_revision", "last_known_good", "reason", "updated_at", "image_digests", "candidate_revision", "lease", "rollout_id")
    class ImageDigestsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_REVISION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_REVISION_FIELD_NUMBER: _ClassVar[int]
    LAST_KNOWN_GOOD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_REVISION_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    release: str
    phase: ReleasePhase
    active_revision: int
    previous_revision: int
    last_known_good: int
    reason: str
    updated_at: _timestamp_pb2.Timestamp
    image_digests: _containers.ScalarMap[str, str]
    candidate_revision: int
    lease: str
    rollout_id: str
    def __init__(self, release: _Optional[str] = ..., phase: _Optional[_Union[ReleasePhase, str]] = ..., active_revision: _Optional[int] = ..., previous_revision: _Optional[int] = ..., last_known_good: _Optional[int] = ..., reason: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., image_digests: _Optional[_Mapping[str, str]] = ..., candidate_revision: _Optional[int] = ..., lease: _Optional[str] = ..., rollout_id: _Optional[str] = ...) -> None: ...

class LeaseReleaseRequest(_message.Message):
    __slots__ = ("release", "owner", "rollout_id", "ttl", "takeover")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    TAKEOVER_FIELD_NUMBER: _ClassVar[int]
    release: str
    owner: str
    rollout_id: str
    ttl: _duration_pb2.Duration
    takeover: bool
    def __init__(self, release: _Optional[str] = ..., owner: _Optional[str] = ..., rollout_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., takeover: _Optional[bool] = ...) -> None: ...

class LeaseReleaseResponse(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UnleaseReleaseRequest(_message.Message):
    __slots__ = ("release", "token")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    release: str
    token: str
    def __init__(self, release: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class UnleaseReleaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StageReleaseRequest(_message.Message):
    __slots__ = ("spec", "lease_token", "rollout_id", "materials")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    MATERIALS_FIELD_NUMBER: _ClassVar[int]
    spec: RevisionSpec
    lease_token: str
    rollout_id: str
    materials: _containers.RepeatedCompositeFieldContainer[SecretMaterial]
    def __init__(self, spec: _Optional[_Union[RevisionSpec, _Mapping]] = ..., lease_token: _Optional[str] = ..., rollout_id: _Optional[str] = ..., materials: _Optional[_Iterable[_Union[SecretMaterial, _Mapping]]] = ...) -> None: ...

class StageReleaseProgress(_message.Message):
    __slots__ = ("message", "bytes_done", "bytes_total", "revision", "done")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    message: str
    bytes_done: int
    bytes_total: int
    revision: int
    done: bool
    def __init__(self, message: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., revision: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class ActivateReleaseRequest(_message.Message):
    __slots__ = ("release", "revision", "policy", "lease_token", "rollout_id", "force")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    release: str
    revision: int
    policy: VerifyPolicy
    lease_token: str
    rollout_id: str
    force: bool
    def __init__(self, release: _Optional[str] = ..., revision: _Optional[int] = ..., policy: _Optional[_Union[VerifyPolicy, _Mapping]] = ..., lease_token: _Optional[str] = ..., rollout_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ActivateReleaseResponse(_message.Message):
    __slots__ = ("state", "switched")
    STATE_FIELD_NUMBER: _ClassVar[int]
    SWITCHED_FIELD_NUMBER: _ClassVar[int]
    state: ReleaseState
    switched: bool
    def __init__(self, state: _Optional[_Union[ReleaseState, _Mapping]] = ..., switched: _Optional[bool] = ...) -> None: ...

class CommitReleaseRequest(_message.Message):
    __slots__ = ("release", "revision", "lease_token")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    release: str
    revision: int
    lease_token: str
    def __init__(self, release: _Optional[str] = ..., revision: _Optional[int] = ..., lease_token: _Optional[str] = ...) -> None: ...

class CommitReleaseResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ReleaseState
    def __init__(self, state: _Optional[_Union[ReleaseState, _Mapping]] = ...) -> None: ...

class RollbackReleaseRequest(_message.Message):
    __slots__ = ("release", "target", "lease_token", "reason")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    release: str
    target: RollbackTarget
    lease_token: str
    reason: str
    def __init__(self, release: _Optional[str] = ..., target: _Optional[_Union[RollbackTarget, str]] = ..., lease_token: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackReleaseResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ReleaseState
    def __init__(self, state: _Optional[_Union[ReleaseState, _Mapping]] = ...) -> None: ...

class ListReleasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListReleasesResponse(_message.Message):
    __slots__ = ("releases",)
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[ReleaseState]
    def __init__(self, releases: _Optional[_Iterable[_Union[ReleaseState, _Mapping]]] = ...) -> None: ...

class GetReleaseRequest(_message.Message):
    __slots__ = ("release",)
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    release: str
    def __init__(self, release: _Optional[str] = ...) -> None: ...

class GetReleaseResponse(_message.Message):
    __slots__ = ("state", "revisions")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    state: ReleaseState
    revisions: _containers.RepeatedCompositeFieldContainer[Revision]
    def __init__(self, state: _Optional[_Union[ReleaseState, _Mapping]] = ..., revisions: _Optional[_Iterable[_Union[Revision, _Mapping]]] = ...) -> None: ...

class WatchReleaseRequest(_message.Message):
    __slots__ = ("release",)
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    release: str
    def __init__(self, release: _Optional[str] = ...) -> None: ...
