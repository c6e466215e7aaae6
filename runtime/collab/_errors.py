"""Errors of the collaboration primitives (``loom.runtime.collab``)."""

from __future__ import annotations

from .._errors import DeadlineExceeded, InvalidArgument, LoomError

__all__ = ["BarrierAborted", "BarrierMismatch", "NoResponders", "RequestTimeout"]


class RequestTimeout(DeadlineExceeded):
    """No reply with the request's correlation id arrived before the timeout.

    A ``TimeoutError`` too. The responder may still answer later: its reply then reaches no
    subscriber and is counted as ``unrouted`` by the bus.

    Attributes:
        topic: where the request was published.
        correlation_id: the correlation id replies had to carry.
        timeout: the timeout, in seconds.
    """

    def __init__(self, topic: str, correlation_id: str, timeout: float) -> None:
        super().__init__(
            f"no reply to the request on {topic!r} (correlation id {correlation_id}) "
            f"within {timeout:g}s"
        )
        self.topic = topic
        self.correlation_id = correlation_id
        self.timeout = timeout


class NoResponders(LoomError):
    """A request reached no subscriber at all, so no reply can come; raised at once.

    Only detected on a bus without a transport: with one, a remote process may answer, and the
    request waits for its timeout instead.

    Attributes:
        topic: where the request was published.
        correlation_id: the correlation id of the request.
    """

    def __init__(self, topic: str, correlation_id: str) -> None:
        super().__init__(f"no subscriber for the request on {topic!r}; nobody can reply")
        self.topic = topic
        self.correlation_id = correlation_id


class BarrierMismatch(InvalidArgument):
    """An arrival named another number of parties than the barrier's first arrival did.

    The arrival is refused and not counted; the barrier keeps waiting for the others.

    Attributes:
        barrier: the barrier's name.
        thread_id: the thread it runs on.
        parties: the number the barrier was opened with.
        given: the number this arrival named.
    """

    def __init__(self, barrier: str, thread_id: str, parties: int, given: int) -> None:
        super().__init__(
            f"barrier {barrier!r} (thread {thread_id!r}) waits for {parties} parties; "
            f"this arrival said {given}"
        )
        self.barrier = barrier
        self.thread_id = thread_id
        self.parties = parties
        self.given = given


class BarrierAborted(LoomError):
    """The barrier coordinator closed while this participant waited.

    Attributes:
        barrier: the barrier's name.
        thread_id: the thread it ran on.
    """

    def __init__(self, barrier: str, thread_id: str) -> None:
        super().__init__(
            f"the barrier coordinator closed before barrier {barrier!r} (thread {thread_id!r}) "
            "completed"
        )
        self.barrier = barrier
        self.thread_id = thread_id
