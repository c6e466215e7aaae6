"""Loom: an event-driven runtime for AI agents.

What users import. The agent SDK (``Agent``, ``Context``, ``capability``) arrives with the actor
runtime; today this re-exports the event model and the bus.
"""

from loom.runtime import BusClosed as BusClosed
from loom.runtime import Envelope as Envelope
from loom.runtime import Event as Event
from loom.runtime import EventBus as EventBus
from loom.runtime import InvalidTopic as InvalidTopic
from loom.runtime import LoomError as LoomError
from loom.runtime import QoS as QoS

__version__ = "0.1.0"

__all__ = ["BusClosed", "Envelope", "Event", "EventBus", "InvalidTopic", "LoomError", "QoS"]
