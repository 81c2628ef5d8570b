from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("runner_id", "host", "port", "max_sandboxes", "version", "labels", "heartbeat_interval_ms", "draining", "session_ids", "unfinished_turns")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUNNER_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    MAX_SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    UNFINISHED_TURNS_FIELD_NUMBER: _ClassVar[int]
    runner_id: str
    host: str
    port: int
    max_sandboxes: int
    version: str
    labels: _containers.ScalarMap[str, str]
    heartbeat_interval_ms: int
    draining: bool
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    unfinished_turns: _containers.RepeatedCompositeFieldContainer[UnfinishedTurn]
    def __init__(self, runner_id: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., max_sandboxes: _Optional[int] = ..., version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., heartbeat_interval_ms: _Optional[int] = ..., draining: _Optional[bool] = ..., session_ids: _Optional[_Iterable[str]] = ..., unfinished_turns: _Optional[_Iterable[_Union[UnfinishedTurn, _Mapping]]] = ...) -> None: ...

class UnfinishedTurn(_message.Message):
    __slots__ = ("session_id", "last_seq_hint", "running")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_HINT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    last_seq_hint: int
    running: bool
    def __init__(self, session_id: _Optional[str] = ..., last_seq_hint: _Optional[int] = ..., running: _Optional[bool] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("accepted", "heartbeat_interval_ms", "gateway_id", "reason", "release_session_ids")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RELEASE_SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    heartbeat_interval_ms: int
    gateway_id: str
    reason: str
    release_session_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[bool] = ..., heartbeat_interval_ms: _Optional[int] = ..., gateway_id: _Optional[str] = ..., reason: _Optional[str] = ..., release_session_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("active", "warming", "max")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    WARMING_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    active: int
    warming: int
    max: int
    def __init__(self, active: _Optional[int] = ..., warming: _Optional[int] = ..., max: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("runner_id", "capacity", "sent_at_unix_ms", "leaving")
    RUNNER_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    runner_id: str
    capacity: Capacity
    sent_at_unix_ms: int
    leaving: bool
    def __init__(self, runner_id: _Optional[str] = ..., capacity: _Optional[_Union[Capacity, _Mapping]] = ..., sent_at_unix_ms: _Optional[int] = ..., leaving: _Optional[bool] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("drain", "ack")
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    drain: Drain
    ack: Ack
    def __init__(self, drain: _Optional[_Union[Drain, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason", "deadline_ms")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    deadline_ms: int
    def __init__(self, reason: _Optional[str] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("server_time_unix_ms",)
    SERVER_TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    server_time_unix_ms: int
    def __init__(self, server_time_unix_ms: _Optional[int] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("session_id", "agent_name", "agent_version", "agent_bundle", "agent_path", "agent_config_json", "state", "credential")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    AGENT_PATH_FIELD_NUMBER: _ClassVar[int]
    AGENT_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    agent_name: str
    agent_version: str
    agent_bundle: bytes
    agent_path: str
    agent_config_json: bytes
    state: bytes
    credential: ModelCredential
    def __init__(self, session_id: _Optional[str] = ..., agent_name: _Optional[str] = ..., agent_version: _Optional[str] = ..., agent_bundle: _Optional[bytes] = ..., agent_path: _Optional[str] = ..., agent_config_json: _Optional[bytes] = ..., state: _Optional[bytes] = ..., credential: _Optional[_Union[ModelCredential, _Mapping]] = ...) -> None: ...

class ModelCredential(_message.Message):
    __slots__ = ("type", "key")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    type: str
    key: str
    def __init__(self, type: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class CreateSandboxResponse(_message.Message):
    __slots__ = ("sandbox_id", "pid", "restored", "attached", "workspace", "agent_backend")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_BACKEND_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    pid: int
    restored: bool
    attached: bool
    workspace: str
    agent_backend: str
    def __init__(self, sandbox_id: _Optional[str] = ..., pid: _Optional[int] = ..., restored: _Optional[bool] = ..., attached: _Optional[bool] = ..., workspace: _Optional[str] = ..., agent_backend: _Optional[str] = ...) -> None: ...

class SessionCommand(_message.Message):
    __slots__ = ("open", "query", "interrupt", "ack")
    class Open(_message.Message):
        __slots__ = ("session_id", "state_max_bytes", "resume_after")
        SESSION_ID_FIELD_NUMBER: _ClassVar[int]
        STATE_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
        RESUME_AFTER_FIELD_NUMBER: _ClassVar[int]
        session_id: str
        state_max_bytes: int
        resume_after: int
        def __init__(self, session_id: _Optional[str] = ..., state_max_bytes: _Optional[int] = ..., resume_after: _Optional[int] = ...) -> None: ...
    class Query(_message.Message):
        __slots__ = ("prompt", "options_json", "turn_id")
        PROMPT_FIELD_NUMBER: _ClassVar[int]
        OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
        TURN_ID_FIELD_NUMBER: _ClassVar[int]
        prompt: str
        options_json: bytes
        turn_id: str
        def __init__(self, prompt: _Optional[str] = ..., options_json: _Optional[bytes] = ..., turn_id: _Optional[str] = ...) -> None: ...
    class Interrupt(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Ack(_message.Message):
        __slots__ = ("seq_hint",)
        SEQ_HINT_FIELD_NUMBER: _ClassVar[int]
        seq_hint: int
        def __init__(self, seq_hint: _Optional[int] = ...) -> None: ...
    OPEN_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    open: SessionCommand.Open
    query: SessionCommand.Query
    interrupt: SessionCommand.Interrupt
    ack: SessionCommand.Ack
    def __init__(self, open: _Optional[_Union[SessionCommand.Open, _Mapping]] = ..., query: _Optional[_Union[SessionCommand.Query, _Mapping]] = ..., interrupt: _Optional[_Union[SessionCommand.Interrupt, _Mapping]] = ..., ack: _Optional[_Union[SessionCommand.Ack, _Mapping]] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("type", "data", "seq_hint", "turn_id", "state", "more")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SEQ_HINT_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    type: str
    data: bytes
    seq_hint: int
    turn_id: str
    state: StateChunk
    more: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, type: _Optional[str] = ..., data: _Optional[bytes] = ..., seq_hint: _Optional[int] = ..., turn_id: _Optional[str] = ..., state: _Optional[_Union[StateChunk, _Mapping]] = ..., more: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "data")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    type: str
    data: bytes
    def __init__(self, type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ("session_id", "prompt", "options_json", "state_max_bytes", "turn_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    STATE_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    prompt: str
    options_json: bytes
    state_max_bytes: int
    turn_id: str
    def __init__(self, session_id: _Optional[str] = ..., prompt: _Optional[str] = ..., options_json: _Optional[bytes] = ..., state_max_bytes: _Optional[int] = ..., turn_id: _Optional[str] = ...) -> None: ...

class InterruptRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class InterruptResponse(_message.Message):
    __slots__ = ("interrupted",)
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    interrupted: bool
    def __init__(self, interrupted: _Optional[bool] = ...) -> None: ...

class DestroySandboxRequest(_message.Message):
    __slots__ = ("session_id", "keep_workspace")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    keep_workspace: bool
    def __init__(self, session_id: _Optional[str] = ..., keep_workspace: _Optional[bool] = ...) -> None: ...

class DestroySandboxResponse(_message.Message):
    __slots__ = ("destroyed",)
    DESTROYED_FIELD_NUMBER: _ClassVar[int]
    destroyed: bool
    def __init__(self, destroyed: _Optional[bool] = ...) -> None: ...

class SnapshotStateRequest(_message.Message):
    __slots__ = ("session_id", "max_bytes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    max_bytes: int
    def __init__(self, session_id: _Optional[str] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class StateChunk(_message.Message):
    __slots__ = ("data", "last")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    last: bool
    def __init__(self, data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("session_id", "command", "timeout_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    command: str
    timeout_ms: int
    def __init__(self, session_id: _Optional[str] = ..., command: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ExecResponse(_message.Message):
    __slots__ = ("exit_code", "stdout", "stderr", "truncated", "timed_out")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool
    timed_out: bool
    def __init__(self, exit_code: _Optional[int] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., truncated: _Optional[bool] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("sandboxes", "busy", "max_sandboxes", "cpu_seconds", "rss_bytes")
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    MAX_SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    sandboxes: int
    busy: int
    max_sandboxes: int
    cpu_seconds: float
    rss_bytes: int
    def __init__(self, sandboxes: _Optional[int] = ..., busy: _Optional[int] = ..., max_sandboxes: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., rss_bytes: _Optional[int] = ...) -> None: ...

class ListFilesRequest(_message.Message):
    __slots__ = ("session_id", "include_hidden")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    include_hidden: bool
    def __init__(self, session_id: _Optional[str] = ..., include_hidden: _Optional[bool] = ...) -> None: ...

class FileEntry(_message.Message):
    __slots__ = ("path", "size", "mtime")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    mtime: float
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., mtime: _Optional[float] = ...) -> None: ...

class ListFilesResponse(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[FileEntry]
    def __init__(self, files: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ...) -> None: ...

class ReadFileRequest(_message.Message):
    __slots__ = ("session_id", "path", "max_bytes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    path: str
    max_bytes: int
    def __init__(self, session_id: _Optional[str] = ..., path: _Optional[str] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("size", "data", "last")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    size: int
    data: bytes
    last: bool
    def __init__(self, size: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class WriteFilesRequest(_message.Message):
    __slots__ = ("session_id", "path", "data")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    path: str
    data: bytes
    def __init__(self, session_id: _Optional[str] = ..., path: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteFileResult(_message.Message):
    __slots__ = ("path", "written", "size", "error")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    path: str
    written: bool
    size: int
    error: str
    def __init__(self, path: _Optional[str] = ..., written: _Optional[bool] = ..., size: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class WriteFilesResponse(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[WriteFileResult]
    def __init__(self, files: _Optional[_Iterable[_Union[WriteFileResult, _Mapping]]] = ...) -> None: ...

class DeleteFileRequest(_message.Message):
    __slots__ = ("session_id", "path")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    path: str
    def __init__(self, session_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class DeleteFileResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UploadWorkspaceRequest(_message.Message):
    __slots__ = ("session_id", "data")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    data: bytes
    def __init__(self, session_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadWorkspaceResponse(_message.Message):
    __slots__ = ("written",)
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    written: int
    def __init__(self, written: _Optional[int] = ...) -> None: ...

class ReadLogsRequest(_message.Message):
    __slots__ = ("session_id", "after", "limit")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    after: int
    limit: int
    def __init__(self, session_id: _Optional[str] = ..., after: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("index", "level", "text")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    index: int
    level: str
    text: str
    def __init__(self, index: _Optional[int] = ..., level: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ReadLogsResponse(_message.Message):
    __slots__ = ("lines", "modified_unix_ms")
    LINES_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    modified_unix_ms: int
    def __init__(self, lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ..., modified_unix_ms: _Optional[int] = ...) -> None: ...
