from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClusterStatus(_message.Message):
    __slots__ = ("node", "peers", "sent_lossless_events", "sent_realtime_events", "received_lossless_events", "received_realtime_events", "realtime_lost", "realtime_send_failed", "retransmitted_frames", "duplicate_frames", "unacked_frames", "reconnects", "silent", "held_events", "lossless_dropped")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    SENT_LOSSLESS_EVENTS_FIELD_NUMBER: _ClassVar[int]
    SENT_REALTIME_EVENTS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_LOSSLESS_EVENTS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_REALTIME_EVENTS_FIELD_NUMBER: _ClassVar[int]
    REALTIME_LOST_FIELD_NUMBER: _ClassVar[int]
    REALTIME_SEND_FAILED_FIELD_NUMBER: _ClassVar[int]
    RETRANSMITTED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    UNACKED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    SILENT_FIELD_NUMBER: _ClassVar[int]
    HELD_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LOSSLESS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    node: str
    peers: _containers.RepeatedCompositeFieldContainer[ClusterPeer]
    sent_lossless_events: int
    sent_realtime_events: int
    received_lossless_events: int
    received_realtime_events: int
    realtime_lost: int
    realtime_send_failed: int
    retransmitted_frames: int
    duplicate_frames: int
    unacked_frames: int
    reconnects: int
    silent: _containers.RepeatedScalarFieldContainer[str]
    held_events: int
    lossless_dropped: int
    def __init__(self, node: _Optional[str] = ..., peers: _Optional[_Iterable[_Union[ClusterPeer, _Mapping]]] = ..., sent_lossless_events: _Optional[int] = ..., sent_realtime_events: _Optional[int] = ..., received_lossless_events: _Optional[int] = ..., received_realtime_events: _Optional[int] = ..., realtime_lost: _Optional[int] = ..., realtime_send_failed: _Optional[int] = ..., retransmitted_frames: _Optional[int] = ..., duplicate_frames: _Optional[int] = ..., unacked_frames: _Optional[int] = ..., reconnects: _Optional[int] = ..., silent: _Optional[_Iterable[str]] = ..., held_events: _Optional[int] = ..., lossless_dropped: _Optional[int] = ...) -> None: ...

class ClusterPeer(_message.Message):
    __slots__ = ("node", "patterns", "unacked_frames", "queued_events")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    UNACKED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    QUEUED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    node: str
    patterns: int
    unacked_frames: int
    queued_events: int
    def __init__(self, node: _Optional[str] = ..., patterns: _Optional[int] = ..., unacked_frames: _Optional[int] = ..., queued_events: _Optional[int] = ...) -> None: ...
