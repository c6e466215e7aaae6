"""The policies of a process: the named configurations, the live policies made from them, and
which tool names each applies to."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping

import msgspec

from ._config import PolicyConfig
from ._errors import PolicyConfigError
from ._policy import Policy, PolicyStats

__all__ = ["Policies", "PoliciesStats", "PolicyRules"]


class PoliciesStats(msgspec.Struct, frozen=True, kw_only=True):
    """Every live policy of a process.

    Attributes:
        policies: each one's statistics, ordered by name.
    """

    policies: tuple[PolicyStats, ...] = ()


class PolicyRules:
    """Which policy guards which tool (by name) or request (by topic): ``(pattern, policy)``
    rules, first match wins.

    A pattern is a name with shell wildcards (``"mcp.github.*"``, ``"fs.read"``, ``"*"``).
    The answer for a name is cached until the rules change, so a call pays one dict lookup.
    """

    __slots__ = ("_cache", "_rules")

    def __init__(self, rules: Iterable[tuple[str, Policy]] = ()) -> None:
        self._rules: list[tuple[str, Policy]] = list(rules)
        self._cache: dict[str, Policy | None] = {}

    def add(self, pattern: str, policy: Policy) -> None:
        """Guard the names matching ``pattern`` with ``policy`` (after earlier rules)."""
        self._rules.append((pattern, policy))
        self._cache.clear()

    @property
    def rules(self) -> tuple[tuple[str, Policy], ...]:
        return tuple(self._rules)

    def match(self, name: str) -> Policy | None:
        """The policy of ``name``, or ``None``."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        found = next((p for pattern, p in self._rules if fnmatch.fnmatchcase(name, pattern)), None)
        if len(self._cache) < 4096:  # bounded: names come from peers too
            self._cache[name] = found
        return found

    def __bool__(self) -> bool:
        return bool(self._rules)


class Policies:
    """The named policy configurations of a process (``[policy.<name>]``) and every live
    :class:`Policy` made from them, for statistics, metrics and the dashboard.

    Args:
        configs: the named configurations.
    """

    def __init__(self, configs: Mapping[str, PolicyConfig] | None = None) -> None:
        self._configs = dict(configs or {})
        self._live: dict[str, Policy] = {}
        self.tools = PolicyRules()
        """The rules that guard tools by name (``[tools.policy]``)."""
        self.requests = PolicyRules()
        """The rules that guard ``ctx.request`` by topic (``[requests.policy]``)."""

    @property
    def configs(self) -> Mapping[str, PolicyConfig]:
        return self._configs

    def make(self, name: str, target: str) -> Policy:
        """A live policy of the configuration ``name`` for ``target``, named
        ``<name>@<target>``: each target gets its own breaker, bucket and slots.

        Raises:
            PolicyConfigError: no policy has that name.
        """
        config = self._configs.get(name)
        if config is None:
            known = ", ".join(sorted(self._configs)) or "none"
            raise PolicyConfigError(f"no policy named {name!r} (defined: {known})")
        return self.add(Policy(f"{name}@{target}", config))

    def add(self, policy: Policy) -> Policy:
        """Count ``policy`` among this process's (made in code, or by a provider); returns it."""
        self._live[policy.name] = policy
        return policy

    def attach_tools(self, rules: Mapping[str, str]) -> None:
        """Guard tools by name: ``{pattern: policy name}`` (``[tools.policy]``), one live
        policy per pattern.

        Raises:
            PolicyConfigError: a rule names an unknown policy.
        """
        for pattern, name in rules.items():
            self.tools.add(pattern, self.make(name, f"tools:{pattern}"))

    def attach_requests(self, rules: Mapping[str, str]) -> None:
        """Guard requests by topic: ``{pattern: policy name}`` (``[requests.policy]``), one
        live policy per pattern. Attach them before the ``AgentRuntime`` holding these
        policies is entered: it hands them to its bus's reply router then.

        Raises:
            PolicyConfigError: a rule names an unknown policy.
        """
        for pattern, name in rules.items():
            self.requests.add(pattern, self.make(name, f"requests:{pattern}"))

    def __iter__(self) -> Iterator[Policy]:
        return iter(list(self._live.values()))

    def statistics(self) -> PoliciesStats:
        """Every live policy's statistics, by name."""
        return PoliciesStats(policies=tuple(p.statistics() for _, p in sorted(self._live.items())))
