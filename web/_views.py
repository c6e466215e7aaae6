"""What each page's JSON endpoint answers: pure functions of the runtime and the observer,
so each is tested without HTTP."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from loom.runtime import (
    AgentRuntime,
    ApprovalAlreadyDecided,
    ApprovalNotFound,
    InvalidArgument,
    LoomError,
    NotAQuestion,
    QuestionAlreadyAnswered,
    pattern_matches,
)

from ._observer import Observer, event_json

__all__ = [
    "agent_detail",
    "agents",
    "approvals",
    "budgets",
    "decide",
    "durable",
    "policies",
    "timeline",
    "topics",
    "topology",
    "turns",
]

_INTERNAL = ("loom.",)
"""Topics of the runtime's own (lifecycle, dead letters): left out of the topology."""


def _rate(observer: Observer, topic: str, seconds: int = 5) -> float:
    """Events a second on ``topic`` over the last ``seconds`` samples."""
    spark = observer.rates.get(topic)
    if not spark:
        return 0.0
    recent = list(spark)[-seconds:]
    return sum(recent) / len(recent)


def agents(runtime: AgentRuntime) -> list[dict[str, Any]]:
    """Every agent the directory knows."""
    rows = []
    for info in sorted(runtime.agents(), key=lambda i: i.id):
        rows.append(
            {
                "id": info.id,
                "node": info.node or ("remote" if info.remote else "local"),
                "status": info.status.value,
                "remote": info.remote,
                "mailbox_depth": info.mailbox_depth,
                "in_flight": info.in_flight,
                "restarts": info.restarts,
                "capabilities": list(info.capabilities),
                "patterns": list(info.patterns),
                "last_heartbeat_ms": info.last_heartbeat_ms,
            }
        )
    return rows


def policies(runtime: AgentRuntime) -> list[dict[str, Any]]:
    """Every resilience policy of the runtime (``AgentRuntime.policies``): its counters and
    its circuit breaker's state (``docs/guardrails.md``)."""
    rows = []
    for p in runtime.policies.statistics().policies:
        breaker = None
        if p.breaker is not None:
            b = p.breaker
            breaker = {
                "state": b.state.value,
                "opened": b.opened,
                "rejected": b.rejected,
                "retry_in_s": round(b.retry_in, 3),
                "consecutive_failures": b.counts.consecutive_failures,
            }
        rows.append(
            {
                "name": p.name,
                "calls": p.calls,
                "succeeded": p.succeeded,
                "failed": p.failed,
                "retries": p.retries,
                "timeouts": p.timeouts,
                "rejected": p.rejected,
                "rate_limited": p.rate_limited,
                "in_flight": p.in_flight,
                "waiting": p.waiting,
                "breaker": breaker,
            }
        )
    return rows


def agent_detail(runtime: AgentRuntime, observer: Observer, agent_id: str) -> dict[str, Any] | None:
    """One agent: its row, its recent events, its tool calls and its turns (``None``: unknown
    and never seen)."""
    row = next((a for a in agents(runtime) if a["id"] == agent_id), None)
    recent = list(observer.recent.get(agent_id, ()))
    mine = [t for t in observer.turns.values() if t.agent == agent_id]
    if row is None and not recent and not mine:
        return None
    calls = []
    for turn in mine:
        for event in turn.events:
            if event["type"] == "turn.tool_finished" and isinstance(event["payload"], dict):
                result = event["payload"].get("result", {})
                calls.append({"turn": turn.key, "at_ms": event["at_ms"], **result})
    return {
        "agent": row,
        "recent": recent,
        "tool_calls": calls[-100:][::-1],
        "turns": [_turn_row(t) for t in reversed(mine)],
    }


def topics(runtime: AgentRuntime, observer: Observer) -> dict[str, Any]:
    """Per topic: counters, the rate and its sparkline; per subscription: its QoS and queue."""
    stats = runtime.bus.statistics()
    owners = _owners(runtime)
    rows = [
        {
            "topic": t.topic,
            "published": t.published,
            "unrouted": t.unrouted,
            "delivered": t.delivered,
            "dropped": t.dropped.total,
            "rate": round(_rate(observer, t.topic), 2),
            "spark": list(observer.rates.get(t.topic, ())),
        }
        for t in sorted(stats.topics, key=lambda t: t.topic)
    ]
    subs = [
        {
            "id": s.id,
            "pattern": s.pattern,
            "patterns": list(s.patterns) or [s.pattern],
            "qos": s.qos.name,
            "owner": owners.get(frozenset(s.patterns or (s.pattern,)), ""),
            "queued": s.queued,
            "capacity": s.capacity,
            "high_water": s.high_water,
            "delivered": s.delivered,
            "dropped": s.dropped.total,
            "waiting_publishers": s.waiting_publishers,
        }
        for s in stats.subscriptions
        if not observer.is_own(s.id)
    ]
    return {
        "published": stats.published,
        "unrouted": stats.unrouted,
        "dropped": stats.dropped.total,
        "topics": rows,
        "subscriptions": subs,
        "dashboard_dropped": observer.dropped,
    }


def _owners(runtime: AgentRuntime) -> dict[frozenset[str], str]:
    """An agent's mailbox is one subscription on all of its patterns: patterns -> agent."""
    return {frozenset(info.patterns): info.id for info in runtime.agents() if not info.remote}


def topology(runtime: AgentRuntime, observer: Observer) -> dict[str, Any]:
    """Agents and topics as a graph: an edge from an agent to each topic it publishes on
    (seen by the tap), and from each topic to each agent subscribed to it."""
    observer.want_tap()
    topics_seen = {
        t.topic for t in runtime.bus.statistics().topics if not t.topic.startswith(_INTERNAL)
    }
    nodes_agents = agents(runtime)
    edges: list[dict[str, Any]] = []
    for (sender, topic), count in observer.publishers.items():
        if topic.startswith(_INTERNAL):
            continue
        topics_seen.add(topic)
        edges.append(
            {
                "from": sender,
                "to": topic,
                "kind": "publishes",
                "count": count,
                "rate": round(_rate(observer, topic), 2),
            }
        )
    for agent in nodes_agents:
        for pattern in agent["patterns"]:
            matched = [t for t in topics_seen if pattern_matches(pattern, t)]
            if not matched and pattern.startswith("agent." + agent["id"]):
                continue  # its own mailbox, nobody wrote to yet: noise at 50 agents
            for topic in matched or [pattern]:
                topics_seen.add(topic)
                edges.append(
                    {
                        "from": topic,
                        "to": agent["id"],
                        "kind": "subscribes",
                        "rate": round(_rate(observer, topic), 2),
                    }
                )
    known = {a["id"] for a in nodes_agents}
    publishers = sorted({e["from"] for e in edges if e["kind"] == "publishes"} - known)
    return {
        "agents": [{"id": a["id"], "status": a["status"]} for a in nodes_agents]
        + [{"id": p, "status": "publisher"} for p in publishers],
        "topics": [{"id": t, "rate": round(_rate(observer, t), 2)} for t in sorted(topics_seen)],
        "edges": edges,
        "tapping": observer.tapping,
    }


def _turn_row(turn: Any) -> dict[str, Any]:
    end = next((e for e in turn.events if e["type"] == "turn.end"), None)
    payload = end["payload"] if end is not None and isinstance(end["payload"], dict) else {}
    return {
        "key": turn.key,
        "agent": turn.agent,
        "started_ms": turn.started_ms,
        "ended": turn.ended,
        "outcome": payload.get("kind", ""),
        "iterations": payload.get("iterations", 0),
        "usage": payload.get("usage", {}),
    }


def turns(observer: Observer) -> list[dict[str, Any]]:
    """The turns kept, newest first."""
    return [_turn_row(t) for t in reversed(list(observer.turns.values()))]


def timeline(observer: Observer, key: str, *, now_ms: int | None = None) -> dict[str, Any] | None:
    """A turn on a time axis: its model calls and tool calls as segments (ms from the
    turn's start), live while it runs (an open segment ends at ``now_ms``).

    The turn's events say when each tool call started and finished, and each model call's
    tokens and duration once it has answered (``turn.model_call``). A model call not
    reported yet (running; or an agent older than that event) is the time between the tool
    calls: the first from the turn's start to its first tool call (or its end), each next
    from the previous iteration's last tool result to the next call.
    """
    turn = observer.turn(key)
    if turn is None:
        return None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    start = turn.started_ms
    tools: dict[str, dict[str, Any]] = {}
    text_at: dict[int, int] = {}
    iterations: set[int] = set()
    reported: dict[int, dict[str, Any]] = {}
    end_at: int | None = None
    for event in turn.events:
        payload = event["payload"] if isinstance(event["payload"], dict) else {}
        match event["type"]:
            case "turn.tool_started":
                tools[payload.get("call_id", "")] = {
                    "kind": "tool",
                    "name": payload.get("name", ""),
                    "iteration": payload.get("iteration", 0),
                    "start": event["at_ms"] - start,
                    "end": None,
                    "arguments": payload.get("arguments", {}),
                }
                iterations.add(payload.get("iteration", 0))
            case "turn.tool_finished":
                result = payload.get("result", {})
                seg = tools.setdefault(
                    result.get("call_id", ""),
                    {
                        "kind": "tool",
                        "name": result.get("name", ""),
                        "iteration": result.get("iteration", 0),
                        "start": event["at_ms"] - start - int(result.get("duration_s", 0) * 1000),
                    },
                )
                seg["end"] = event["at_ms"] - start
                seg["is_error"] = result.get("is_error", False)
                seg["duration_ms"] = int(result.get("duration_s", 0) * 1000)
            case "turn.text":
                it = payload.get("iteration", 0)
                text_at[it] = max(text_at.get(it, 0), event["at_ms"] - start)
                iterations.add(it)
            case "turn.model_call":
                it = payload.get("iteration", 0)
                reported[it] = {**payload, "at": event["at_ms"] - start}
                iterations.add(it)
            case "turn.end":
                end_at = event["at_ms"] - start
    finished = end_at if end_at is not None else now - start
    tool_segs = sorted(tools.values(), key=lambda s: s["start"])
    llm = []
    n = max(iterations | {1})
    if end_at is not None:
        last = next((e for e in reversed(turn.events) if e["type"] == "turn.end"), None)
        if last is not None and isinstance(last["payload"], dict):
            n = max(n, int(last["payload"].get("iterations", n)))
    elif (
        n in reported
        and (mine := [s for s in tool_segs if s["iteration"] == n])
        and all(s["end"] is not None for s in mine)
    ):
        n += 1  # call n answered with tool calls, all done: the next call is running
    previous_end = 0
    for it in range(1, n + 1):
        mine = [s for s in tool_segs if s["iteration"] == it]
        if mine:
            seg_end = min(s["start"] for s in mine)
        elif it == n:
            seg_end = text_at.get(it, finished) if end_at is None else finished
        else:
            seg_end = text_at.get(it, previous_end)
        seg = {
            "kind": "llm",
            "name": f"model call {it}",
            "iteration": it,
            "start": previous_end,
            "end": max(seg_end, previous_end),
        }
        call = reported.get(it)
        if call is None and it == n and end_at is None:
            seg["running"] = True
        if call is not None:  # as the loop measured it
            duration = round(float(call.get("duration_s", 0)) * 1000)
            seg["end"] = call["at"]
            seg["start"] = max(0, call["at"] - duration)
            seg["duration_ms"] = duration
            seg["model"] = call.get("model", "")
            seg["prompt_tokens"] = call.get("prompt_tokens", 0)
            seg["completion_tokens"] = call.get("completion_tokens", 0)
        llm.append(seg)
        if mine:
            previous_end = max((s["end"] or finished) for s in mine)
    for seg in tool_segs:
        if seg["end"] is None:
            seg["end"] = finished  # still running
            seg["running"] = True
    row = _turn_row(turn)
    return {**row, "duration_ms": finished, "segments": llm + tool_segs, "events": turn.events}


async def durable(runtime: AgentRuntime, observer: Observer, *, limit: int = 200) -> dict[str, Any]:
    """The durable log's backlogs (each durable name's pending and in-flight events) and its
    dead letters (``loom.dlq.*``, up to ``limit``), with the runtime's in-memory dead letters
    (``loom.deadletter.*``) the dashboard has seen."""
    log = runtime.bus.plumbing.durable_log
    out: dict[str, Any] = {
        "durable": log is not None,
        "backlogs": [],
        "stored_dead_letters": [],
        "dead_letters": list(observer.dead_letters),
    }
    if log is None:
        return out
    try:
        stats = await log.statistics()
        out["backlogs"] = [
            {
                "name": c.name,
                "patterns": list(c.patterns),
                "pending": c.pending,
                "in_flight": c.in_flight,
                "redelivered": c.redelivered,
                "overflow": c.overflow,
            }
            for c in stats.consumers
        ]
        out["stored"] = stats.stored
        stored = runtime.bus.replay("loom.dlq.>")
        try:
            async for delivery in stored:
                out["stored_dead_letters"].append(event_json(delivery, max_payload=512))
                if len(out["stored_dead_letters"]) >= limit:
                    break
        finally:
            await stored.aclose()  # type: ignore[attr-defined]
    except (LoomError, OSError) as exc:  # the log's server away: say so, show the rest
        out["error"] = str(exc)
    return out


# ---------------------------------------------------------------- approvals

_STATUSES = ("pending", "approved", "denied", "expired", "answered")


async def approvals(runtime: AgentRuntime, status: str = "pending") -> dict[str, Any]:
    """The tool calls waiting for a human (or of ``status``; ``all``), from
    ``runtime.approvals``; ``enabled`` is false when the runtime keeps none."""
    store = runtime.approvals
    if store is None:
        return {"enabled": False, "approvals": []}
    wanted = None if status == "all" else status if status in _STATUSES else "pending"
    records = await store.list(status=wanted)  # type: ignore[arg-type]
    return {
        "enabled": True,
        "approvals": [msgspec.to_builtins(r) for r in records],
        "statistics": msgspec.to_builtins(store.statistics()),
    }


async def decide(
    runtime: AgentRuntime, approval_id: str, verdict: str, note: str
) -> tuple[int, dict[str, Any]]:
    """Approve or deny ``approval_id`` from the dashboard (or ``answer`` a question to the
    user, ``note`` being the answer): the HTTP status and the body."""
    store = runtime.approvals
    if store is None:
        return 404, {"error": "this server keeps no approvals"}
    if verdict not in ("approve", "deny", "answer"):
        return 404, {"error": "approve, deny or answer"}
    try:
        if verdict == "answer":
            record = await store.answer(approval_id, note, by="dashboard")
        else:
            decide_ = store.approve if verdict == "approve" else store.deny
            record = await decide_(approval_id, note=note, by="dashboard")
    except ApprovalNotFound as exc:
        return 404, {"error": str(exc)}
    except (ApprovalAlreadyDecided, QuestionAlreadyAnswered) as exc:
        return 409, {"error": str(exc)}
    except (InvalidArgument, NotAQuestion) as exc:
        return 400, {"error": str(exc)}
    return 200, msgspec.to_builtins(record)


# ---------------------------------------------------------------- budgets


def budgets(runtime: AgentRuntime) -> dict[str, Any]:
    """The spend of the runtime's turns (``runtime.budgets``): totals since the start (and of
    them, agents' in their own process), calls refused by budget, and the keys spending most
    within the window."""
    stats = runtime.budgets.statistics()
    return {
        "tokens": stats.tokens,
        "cost_usd": stats.cost_usd,
        "calls": stats.calls,
        "exhausted": dict(stats.exhausted),
        "window_s": stats.window_s,
        "keys": stats.keys,
        "evicted": stats.evicted,
        # Of the totals, what agents in their own process spent (counted here through the
        # bridge's loom.v1.Budgets).
        "remote": {
            "tokens": stats.remote_tokens,
            "cost_usd": stats.remote_cost_usd,
            "calls": stats.remote_calls,
        },
        "top": [
            {"kind": r.kind, "key": r.key, "tokens": r.tokens, "cost_usd": r.cost_usd}
            for r in stats.top
        ],
    }
