"""The actors floor's errors: an agent id that is unknown, taken, or whose agent never started.

They live apart from ``_runtime.py`` so that every module of the floor (the runtime, remote
agents) and the bridge, which refuses a taken id on the wire, raise the same classes.
"""

from __future__ import annotations

from ._errors import InvalidArgument, LoomError

__all__ = ["AgentExists", "AgentNotFound", "AgentStartFailed"]


class AgentNotFound(LoomError, LookupError):
    """No agent with that id is hosted here."""


class AgentExists(InvalidArgument):
    """The agent id is taken: by a local agent, or by a remote agent that is connected (or,
    on a bridge server, whose stream is open).

    The bridge answers it with ``ALREADY_EXISTS``, and a client rebuilds it from that status.

    Attributes:
        agent_id: the id (``""`` when rebuilt from a status, which carries only the text).
    """

    def __init__(self, agent_id: str, detail: str) -> None:
        super().__init__(f"agent {agent_id!r} already exists: {detail}")
        self.agent_id = agent_id


class AgentStartFailed(LoomError):
    """An agent stopped or failed before it ever ran (its ``on_start`` kept failing).

    Attributes:
        agent_id: the agent.
        reason: why.
    """

    def __init__(self, agent_id: str, reason: str) -> None:
        super().__init__(f"agent {agent_id} did not start: {reason}")
        self.agent_id = agent_id
        self.reason = reason
