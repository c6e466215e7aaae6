"""``loom approvals``, ``loom approve ID [--note]``, ``loom deny ID [--note]``: the tool calls
waiting for a human; ``loom answer ID TEXT``: a turn's question to the user (listed by ``loom
approvals`` with the tool ``ask_user``); through ``loom.v1.Approvals`` on the server's port
(``bridge/_approvals_service.py``). Semantics: ``docs/guardrails.md``, "Human approval".
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

import msgspec

from loom.bridge import ApprovalsClient
from loom.runtime import ApprovalRecord

from ._commands import Connection, _ago, _json_line, _table, preview

__all__ = [
    "add_approval_parsers",
    "answer",
    "approval_command",
    "approvals_list",
    "approve",
    "deny",
]

_encoder = msgspec.json.Encoder(enc_hook=str)


async def approvals_list(
    conn: Connection,
    *,
    status: str = "pending",
    agent_id: str = "",
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """``loom approvals``: the calls waiting (or of ``--status``), oldest first."""
    async with conn.client() as admin:
        records = await ApprovalsClient(admin).list(status=status, agent_id=agent_id)
    if as_json:
        for record in records:
            _json_line(msgspec.to_builtins(record), out)
        return 0
    if not records:
        print(f"no {status if status != 'all' else ''} approvals".replace("  ", " "), file=out)
        return 0
    now = time.time_ns() // 1_000_000
    rows = [["ID", "STATUS", "AGENT", "THREAD", "TOOL", "ARGUMENTS", "ASKED", "EXPIRES"]]
    for r in records:
        expires = "-" if r.status != "pending" else _until(r.deadline_ms, now)
        args = preview(_encoder.encode(r.arguments), 50)
        rows.append(
            [
                r.id,
                r.status,
                r.agent_id,
                r.thread_id,
                r.tool,
                args,
                _ago(r.created_ms, now),
                expires,
            ]
        )
    _table(rows, out)
    return 0


def _until(ms: int, now_ms: int) -> str:
    seconds = max(0, ms - now_ms) // 1000
    if seconds >= 10**8:
        return "never"
    if seconds < 120:
        return f"in {seconds}s"
    if seconds < 7200:
        return f"in {seconds // 60}m"
    return f"in {seconds // 3600}h"


async def approve(
    conn: Connection, approval_id: str, *, note: str = "", out: TextIO = sys.stdout
) -> int:
    """``loom approve ID``: the turn resumes and runs the call."""
    async with conn.client() as admin:
        record = await ApprovalsClient(admin).approve(approval_id, note=note)
    print(_decided(record), file=out)
    return 0


async def deny(
    conn: Connection, approval_id: str, *, note: str = "", out: TextIO = sys.stdout
) -> int:
    """``loom deny ID``: the turn resumes without the call; the model reads the note."""
    async with conn.client() as admin:
        record = await ApprovalsClient(admin).deny(approval_id, note=note)
    print(_decided(record), file=out)
    return 0


async def answer(conn: Connection, question_id: str, text: str, *, out: TextIO = sys.stdout) -> int:
    """``loom answer ID TEXT``: the turn resumes; the model reads TEXT as the user's answer."""
    async with conn.client() as admin:
        record = await ApprovalsClient(admin).answer(question_id, text)
    print(_decided(record), file=out)
    return 0


def _decided(record: ApprovalRecord) -> str:
    if record.kind == "question":
        question = preview(str(record.arguments.get("question", "")).encode(), 60)
        return f"{record.id} {record.status}: question {question} of agent {record.agent_id}"
    return f"{record.id} {record.status}: {record.tool} of agent {record.agent_id}"


def add_approval_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
    client: argparse.ArgumentParser,
) -> None:
    """Register ``approvals``, ``approve`` and ``deny`` (``add`` is the CLI's ``_add``)."""
    p = add(
        sub,
        "approvals",
        help="list the tool calls waiting for a human's approval",
        description="The tool calls whose policy asks for approval and that wait in the "
        "server's store, oldest first, with the ID `loom approve` and `loom deny` take; and the "
        "questions turns ask the user (tool ask_user), with the ID `loom answer` takes. "
        "--status shows the approved, denied, expired, answered or all instead.",
        examples="  loom approvals\n  loom approvals --status all --json\n",
        parents=[client],
    )
    p.add_argument(
        "--status",
        default="pending",
        choices=("pending", "approved", "denied", "expired", "answered", "all"),
        help="which ones (default: pending)",
    )
    p.add_argument("--agent", default="", metavar="ID", help="only this agent's")
    p.add_argument("--json", action="store_true", help="one JSON object per approval")
    for name, verb, effect in (
        ("approve", "approve", "its turn resumes and runs the call"),
        ("deny", "deny", "its turn resumes without the call; the model reads the note"),
    ):
        p = add(
            sub,
            name,
            help=f"{verb} a tool call waiting for approval",
            description=f"{verb.capitalize()} the waiting tool call ID (see `loom approvals`): "
            f"{effect}. A call decided already (by someone, or by its deadline) is left as it "
            "is, and the command fails saying how it was decided. Needs the server's admin "
            "token as --token when it has one.",
            examples=f"  loom {name} 0193a5c2-7d1e-7c4a-9b1f-3c2d4e5f6a7b --note 'checked'\n",
            parents=[client],
        )
        p.add_argument("id", metavar="ID", help="the approval's id")
        p.add_argument("--note", default="", help="kept with the decision")
    p = add(
        sub,
        "answer",
        help="answer a question a turn asks the user",
        description="Answer the question ID (see `loom approvals`: tool ask_user): its turn "
        "resumes and the model reads TEXT as the user's answer. A question answered, withdrawn "
        "(loom deny ID) or expired already is left as it is, and the command fails saying so; "
        "an ID that is a tool call's approval is refused (approve or deny it). Needs the "
        "server's admin token as --token when it has one.",
        examples="  loom answer 0193a5c2-7d1e-7c4a-9b1f-3c2d4e5f6a7b 'Lyon, on Friday'\n",
        parents=[client],
    )
    p.add_argument("id", metavar="ID", help="the question's id (a unique prefix will do)")
    p.add_argument("text", metavar="TEXT", help="the answer, as the model will read it")


def approval_command(conn: Connection, args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs ``args``' approval command."""
    if args.command == "approvals":
        return functools.partial(
            approvals_list, conn, status=args.status, agent_id=args.agent, as_json=args.json
        )
    if args.command == "answer":
        return functools.partial(answer, conn, args.id, args.text)
    decide = approve if args.command == "approve" else deny
    return functools.partial(decide, conn, args.id, note=args.note)
