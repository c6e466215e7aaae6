"""``loom agents``, ``topics``, ``tail``, ``publish`` and ``call`` end to end, against a real
``loom serve`` subprocess on port 0, and what each does with bad input."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from ._cli_support import clean_env, loom, loom_serve, running

pytestmark = pytest.mark.anyio

COMMANDS = [
    *("serve", "config", "run", "status", "agents", "tools", "topics", "tail"),
    *("publish", "ask", "call", "version"),
]

# A remote agent that offers a tool, for `loom agents` and `loom call`.
UPPER = """\
from loom import Agent, capability


@capability("text.upper")
async def upper(text: str) -> str:
    \"\"\"Upper-case a text.\"\"\"
    if text == "fail":
        raise RuntimeError("asked to fail")
    return text.upper()


upperer = Agent("upperer", topics=["jobs.*"], capabilities=[upper])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_publish_tail_topics_against_loom_serve(tmp_path: Path) -> None:
    async with loom_serve(tmp_path) as (_server, address):
        async with running(
            "tail", "orders.>", "-a", address, "--json", "--count", "3", cwd=tmp_path
        ) as tail:
            await tail.wait_for(r"tailing orders\.> on ")  # live: nothing after is missed
            first = await loom(
                "publish", "orders.eu", '{"id": 7}', "--type", "order.created",
                "--meta", "lang=en", "-a", address, cwd=tmp_path,
            )  # fmt: skip
            assert first.returncode == 0, first.stderr
            assert b"published" in first.stdout
            (tmp_path / "body.bin").write_bytes(b"\xff\x00binary")
            second = await loom("publish", "orders.us", "@body.bin", "-a", address, cwd=tmp_path)
            assert second.returncode == 0, second.stderr
            third = await loom(
                "publish", "orders.eu", "-", "-a", address, cwd=tmp_path, stdin=b"from stdin"
            )
            assert third.returncode == 0, third.stderr
            assert await tail.wait() == 0  # --count 3: it ends by itself after the third
        events = [json.loads(line) for line in tail.lines if line.startswith("{")]
        assert [e["topic"] for e in events] == ["orders.eu", "orders.us", "orders.eu"]
        assert events[0]["type"] == "order.created"
        assert events[0]["payload"] == '{"id": 7}'
        assert events[0]["metadata"] == {"lang": "en"}
        assert events[0]["source"] == "loom-cli"
        assert "payload_base64" in events[1]
        assert events[2]["type"] == "message"

        topics = await loom("topics", "-a", address, cwd=tmp_path)
        assert topics.returncode == 0, topics.stderr
        text = topics.stdout.decode()
        assert "orders.eu" in text
        assert "orders.us" in text
        stats = await loom("topics", "--json", "--subscriptions", "-a", address, cwd=tmp_path)
        record = json.loads(stats.stdout)
        by_topic = {t["topic"]: t for t in record["topics"]}
        assert by_topic["orders.eu"]["published"] == 2
        assert record["published"] >= 3


async def test_tail_prints_one_line_per_event_until_ctrl_c(tmp_path: Path) -> None:
    async with (
        loom_serve(tmp_path) as (_server, address),
        running("tail", "demo.*", "--type", "greeting", "-a", address, cwd=tmp_path) as tail,
    ):
        await tail.wait_for("tailing demo")
        for data, kind in (("hello world", "greeting"), ("skipped", "other")):
            result = await loom(
                "publish", "demo.a", data, "--type", kind, "-a", address, cwd=tmp_path
            )
            assert result.returncode == 0, result.stderr
        line = (await tail.wait_for(r"^demo\.a greeting \S+ hello world$")).string
        assert line.split()[2]  # the event id
        assert await tail.stop() == 0  # Ctrl-C is the way to stop it: a clean exit
        assert "skipped" not in tail.output


async def test_agents_and_call_with_a_remote_agent(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "upperer.py").write_text(UPPER)
    async with (
        loom_serve(tmp_path) as (_server, address),
        running("run", str(folder), "-a", address, cwd=tmp_path) as run,
    ):
        await run.wait_for(r"\[upperer\] INFO loom.bridge.client: connected to .* as upperer$")

        listed = await loom("agents", "-a", address, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.decode().splitlines() if "upperer" in line)
        assert row.split()[:3] == ["upperer", "running", "remote"]
        assert "jobs.*" in row
        assert "text.upper" in row

        as_json = await loom("agents", "--json", "-a", address, cwd=tmp_path)
        infos = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert [(i["id"], i["status"], i["remote"]) for i in infos] == [
            ("upperer", "running", True)
        ]
        # The mailbox, and under it the inboxes of its collaboration calls (ctx.collab).
        assert set(infos[0]["patterns"]) == {
            "jobs.*",
            "agent.upperer.replies",
            "agent.upperer.replies.>",
        }
        assert abs(infos[0]["last_heartbeat_ms"] - time.time() * 1000) < 60_000
        by_cap = await loom("agents", "--capability", "nope", "-a", address, cwd=tmp_path)
        assert by_cap.stdout.decode().strip() == "no agents"
        by_topic = await loom("agents", "--topic", "jobs.x", "--json", "-a", address, cwd=tmp_path)
        assert [json.loads(x)["id"] for x in by_topic.stdout.splitlines()] == ["upperer"]

        ok = await loom("call", "text.upper", '{"text": "abc"}', "-a", address, cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout) == "ABC"

        (tmp_path / "args.json").write_text('{"text": "from file"}')
        from_file = await loom("call", "text.upper", "@args.json", "-a", address, cwd=tmp_path)
        assert json.loads(from_file.stdout) == "FROM FILE"

        failed = await loom("call", "text.upper", '{"text": "fail"}', "-a", address, cwd=tmp_path)
        assert failed.returncode == 1
        # The runtime's own tool error, as the agent raised it (one hop or three).
        assert failed.stderr == b"loom call: text.upper: failed: RuntimeError: asked to fail\n"

        invalid = await loom("call", "text.upper", '{"txt": 1}', "-a", address, cwd=tmp_path)
        assert invalid.returncode == 1
        assert invalid.stderr.startswith(b"loom call: text.upper: invalid arguments")

        unknown = await loom("call", "no.such.tool", "-a", address, cwd=tmp_path)
        assert unknown.returncode == 1
        assert unknown.stderr == b"loom call: no.such.tool: no such tool\n"
        assert b"Traceback" not in unknown.stderr

        bad_topic = await loom("agents", "--topic", "bad..topic", "-a", address, cwd=tmp_path)
        assert bad_topic.returncode == 1
        assert b"topic" in bad_topic.stderr
        assert await run.stop() == 0


@pytest.mark.parametrize(
    "command",
    [
        ["agents"],
        ["topics"],
        ["tail", "a.b"],
        ["publish", "a.b", "x"],
        ["call", "t.x", "{}"],
    ],
)
async def test_unreachable_server_is_a_clear_error_within_seconds(
    tmp_path: Path, command: list[str]
) -> None:
    start = time.monotonic()
    result = await loom(*command, "-a", f"127.0.0.1:{_free_port()}", cwd=tmp_path, timeout=10)
    assert time.monotonic() - start < 8
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith(f"loom {command[0]}: cannot connect to 127.0.0.1:")
    assert "loom serve" in err
    assert "Traceback" not in err


async def test_address_and_token_come_from_the_environment(tmp_path: Path) -> None:
    async with loom_serve(tmp_path, "--token", "s3cret") as (_server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_TOKEN="s3cret")
        ok = await loom("topics", cwd=tmp_path, env=env)
        assert ok.returncode == 0, ok.stderr
        refused = await loom("topics", cwd=tmp_path, env=clean_env(LOOM_BRIDGE_ADDR=address))
        assert refused.returncode == 1
        assert b"authorization" in refused.stderr or b"token" in refused.stderr
        flag_wins = await loom("topics", "--token", "wrong", cwd=tmp_path, env=env)
        assert flag_wins.returncode == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["call", "t.x", "{not json"], "not valid JSON"),
        (["call", "t.x", "[1, 2]"], "must be a JSON object"),
        (["call", "t.x", "@missing.json"], "cannot read 'missing.json'"),
        (["publish", "a.b", "@missing.bin"], "cannot read 'missing.bin'"),
        (["publish", "a.b", "x", "--meta", "novalue"], "key=value"),
        (["tail", "a.b", "--count", "-1"], "--count"),
        (["agents", "--timeout", "0"], "--timeout"),
        (["agents", "--cert", "c.pem"], "--cert and --key"),
    ],
)
async def test_bad_input_is_a_usage_error(tmp_path: Path, args: list[str], needle: str) -> None:
    # The address is unreachable on purpose: these fail before anything is sent.
    result = await loom(*args, "-a", f"127.0.0.1:{_free_port()}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    err = result.stderr.decode()
    assert needle in err
    assert err.startswith(f"loom {args[0]}: ")
    assert "Traceback" not in err


async def test_publish_to_a_malformed_topic_says_why(tmp_path: Path) -> None:
    async with loom_serve(tmp_path) as (_server, address):
        result = await loom("publish", "bad..topic", "x", "-a", address, cwd=tmp_path)
        assert result.returncode == 1
        assert b"not published: INVALID_ARGUMENT" in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
async def test_every_help_teaches_with_an_example(tmp_path: Path, command: str) -> None:
    result = await loom(command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "examples:" in out
    assert f"loom {command}" in out.split("examples:", 1)[1]


async def test_top_level_help_lists_every_command_with_examples(tmp_path: Path) -> None:
    result = await loom("--help", cwd=tmp_path)
    out = result.stdout.decode()
    for command in COMMANDS:
        assert f"loom {command}" in out.split("examples:", 1)[1], command


async def test_publish_says_when_no_subscription_matched(tmp_path: Path) -> None:
    async with loom_serve(tmp_path) as (_server, address):
        nobody = await loom("publish", "lonely.topic", "x", "-a", address, cwd=tmp_path)
        assert nobody.returncode == 0, nobody.stderr
        assert nobody.stdout.startswith(b"published ")
        assert nobody.stderr == (
            b"note: no subscription matched lonely.topic: nobody received it "
            b"(see `loom agents` and `loom topics --subscriptions`)\n"
        )
        async with running("tail", "lonely.*", "-a", address, cwd=tmp_path) as tail:
            await tail.wait_for("tailing lonely")
            heard = await loom("publish", "lonely.topic", "y", "-a", address, cwd=tmp_path)
            assert heard.returncode == 0, heard.stderr
            assert heard.stderr == b""


async def test_an_unreachable_server_is_said_once_in_few_words(tmp_path: Path) -> None:
    port = _free_port()
    result = await loom("agents", "-a", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.stderr.decode() == (
        f"loom agents: cannot connect to 127.0.0.1:{port}: connection refused "
        "(is `loom serve` running there? set --address or LOOM_BRIDGE_ADDR)\n"
    )
