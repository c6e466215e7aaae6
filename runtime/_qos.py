"""Quality of service tiers of a subscription (values match the wire's ``loom.v1.QoSLevel``)."""

from __future__ import annotations

import enum

__all__ = ["QoS"]


class QoS(enum.IntEnum):
    """What a subscription promises when its consumer falls behind.

    * ``REALTIME``: a bounded buffer (default 512). The publisher never waits; when the buffer is
      full the event is dropped for this subscription alone and counted as ``overflow``.
    * ``BATCHED``: a bounded buffer (default 2048). Nothing is dropped: the publisher waits for
      room (backpressure).
    * ``BACKGROUND``: the same promise with a large buffer (default 16384), for consumers that
      work in bursts.
    """

    REALTIME = 0
    BATCHED = 1
    BACKGROUND = 2

    @property
    def default_buffer(self) -> int:
        """The buffer size a subscription of this tier gets unless it asks otherwise."""
        return _DEFAULT_BUFFER[self]

    @property
    def lossless(self) -> bool:
        """True when this tier never drops: a full buffer makes the publisher wait."""
        return self is not QoS.REALTIME


_DEFAULT_BUFFER = {QoS.REALTIME: 512, QoS.BATCHED: 2048, QoS.BACKGROUND: 16384}
