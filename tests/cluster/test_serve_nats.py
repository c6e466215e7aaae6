"""``loom serve`` and its NATS, as real processes: embedded by default (and never left behind,
even when ``loom serve`` is SIGKILLed), an external server with a token, ``--nats off``;
what ``loom status`` and ``loom config`` say about each."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import anyio
import pytest

from loom.cli._config import explain_config, load_config
from loom.cli._serve import _durable_log
from loom.cluster import NatsEngine, NatsMode, open_nats
from loom.runtime import ConfigError, DurabilityUnavailable, Event, EventBus

from ..sdk._cli_support import LOOM, clean_env, loom, loom_serve, running, running_argv
from .conftest import start_nats_server
from .test_embedded import gone, wait_until

pytestmark = pytest.mark.anyio

READY = r"embedded nats-server ready at (nats://127\.0\.0\.1:\d+) \(pid (\d+), store (\S+)\)"


def nats_line(stdout: bytes) -> str:
    lines = dict(line.split(":", 1) for line in stdout.decode().splitlines())
    return lines["nats"].strip()


async def test_serve_starts_the_embedded_server_and_status_says_where(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with loom_serve(tmp_path) as (server, address):
            ready = await server.wait_for(READY)
            url, pid, store = ready.group(1), int(ready.group(2)), ready.group(3)
            assert store == str((tmp_path / "serve-data" / "nats").resolve())
            await server.wait_for(rf"loom serve: NATS embedded at {url}, store {store}$")
            shown = await loom("status", "-a", address, cwd=tmp_path)
            assert shown.returncode == 0, shown.stderr
            assert nats_line(shown.stdout) == f"embedded at {url} (connected), store {store}"
            raw = await loom("status", "--json", "-a", address, cwd=tmp_path)
            as_json = json.loads(raw.stdout)
            assert as_json["nats"] == "embedded"
            assert as_json["nats_url"] == url
            assert as_json["nats_restarts"] == 0
            assert await server.stop(signal.SIGTERM) == 0
        await server.wait_for("embedded nats-server stopped")
        assert gone(pid)  # stopped after Loom drained, and reaped


async def test_sigkill_of_loom_serve_leaves_no_nats_server(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with loom_serve(tmp_path) as (server, _address):
            pid = int((await server.wait_for(READY)).group(2))
            assert not gone(pid)
            server.signal(signal.SIGKILL)  # no drain, no cleanup code runs in loom serve
            await server.process.wait()
            # The kernel kills the orphan (PR_SET_PDEATHSIG); nothing else would.
            await wait_until(lambda: gone(pid))


async def test_ctrl_c_reaches_loom_first_and_the_server_stops_last(tmp_path: Path) -> None:
    # A terminal's Ctrl-C signals the whole foreground process group. The server sits in a
    # session of its own, so it is not stopped under the draining Loom (nor restarted).
    argv = [*LOOM, "serve", "--port", "0", "--data-dir", str(tmp_path / "data")]
    with anyio.fail_after(60):
        async with running_argv(argv, cwd=tmp_path, group=True) as server:
            pid = int((await server.wait_for(READY)).group(2))
            await server.wait_for(r"listening on")
            assert await server.stop(signal.SIGINT) == 0
        assert server.count("restarting") == 0, server.output
        assert server.count("nats-server: ") == 0, server.output  # it said nothing: no SIGINT
        lines = server.lines
        drained = next(i for i, line in enumerate(lines) if "SIGINT received" in line)
        stopped = next(i for i, line in enumerate(lines) if "nats-server stopped" in line)
        assert drained < stopped
        assert gone(pid)


async def test_nats_off_starts_nothing_and_says_so(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with loom_serve(tmp_path, "--nats", "off") as (server, address):
            await server.wait_for(r"loom serve: NATS off \(memory only")
            shown = await loom("status", "-a", address, cwd=tmp_path)
            assert shown.returncode == 0, shown.stderr
            assert nats_line(shown.stdout) == "off (memory only: durable subscriptions refused)"
            assert server.count("nats-server") == 0
            assert not (tmp_path / "serve-data" / "nats").exists()


async def test_an_external_server_with_a_token(tmp_path: Path) -> None:
    token = "a-token-of-the-external-server"
    data = str(tmp_path / "serve-data")
    with anyio.fail_after(60):
        async with start_nats_server(tmp_path / "external", token=token) as external:
            env = clean_env(LOOM_NATS_URL=external.url, LOOM_NATS_TOKEN=token)
            async with running(
                "serve", "--port", "0", "--data-dir", data, cwd=tmp_path, env=env
            ) as server:
                address = (await server.wait_for(r"listening on (\S+:\d+)")).group(1)
                await server.wait_for(rf"loom serve: NATS external at {external.url}$")
                shown = await loom("status", "-a", address, cwd=tmp_path)
                assert nats_line(shown.stdout) == f"external at {external.url} (connected)"
                assert server.count("embedded nats-server") == 0

            wrong = await loom(
                "serve", "--port", "0", "--data-dir", data, "--nats", external.url,
                "--nats-token", "not-the-token", cwd=tmp_path,
            )  # fmt: skip
            assert wrong.returncode == 1
            err = wrong.stderr.decode()
            assert "Traceback" not in err
            assert err.splitlines()[-1] == (
                f"loom: cannot connect to NATS at {external.url}: authorization violation: "
                "the server refused the credentials (check the NATS token, user and password, "
                "or creds file)"
            )
            assert err.count("authorization violation") == 1


def test_config_of_nats_with_its_sources(tmp_path: Path) -> None:
    environ = {
        "LOOM_NATS_URL": "nats://alice:secret@10.0.0.7:4222",
        "LOOM_NATS_TOKEN": "t0ken",
    }
    with pytest.raises(ConfigError, match="nats_user and nats_password go together"):
        load_config(toml_path=None, environ={**environ}, overrides={"nats_user": "bob"})
    settings = explain_config(toml_path=None, environ=environ, overrides={})
    assert settings["nats"].value == "nats://10.0.0.7:4222"  # no password shown
    assert settings["nats"].source == "env LOOM_NATS_URL"
    assert settings["nats_token"].value == "***"
    toml = tmp_path / "loom.toml"
    toml.write_text('[serve]\nnats = "off"\n')
    settings = explain_config(toml_path=toml, environ={}, overrides={})
    assert (settings["nats"].value, settings["nats"].source) == ("off", f"{toml} [serve]")
    assert explain_config(toml_path=None, environ={}, overrides={})["nats"].value == "embedded"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nats": "http://10.0.0.7"}, "nats must be 'embedded', 'off' or server URLs"),
        ({"nats_token": "t"}, "nats_token: only for an external NATS server: set nats to its URL"),
        ({"nats": "off", "nats_creds_file": "x.creds"}, "not 'off'"),
        ({"nats": "nats://h:4222", "nats_tls_cert_file": "c.pem"}, "go together"),
    ],
)
def test_config_refuses_nats_settings_that_do_not_fit(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(toml_path=None, environ={}, overrides=overrides)


def test_durability_refused_when_off_says_how_to_enable_it() -> None:
    engine = NatsEngine(NatsMode.OFF)
    assert not engine.durable
    with pytest.raises(DurabilityUnavailable) as caught:
        engine.require_durable("durable subscription 'orders'")
    assert caught.value.what == "durable subscription 'orders'"
    assert str(caught.value) == (
        "durable subscription 'orders' needs durability, and this bus has none: `loom serve` "
        "embeds a NATS server with JetStream by default (not with --nats off) or uses --nats "
        "URL; in your own process pass EventBus(durable_log=loom.cluster.JetStreamLog(...))"
    )


@pytest.mark.parametrize("mode", ["embedded", "off"])
async def test_serve_gives_its_bus_a_durable_log_on_its_nats(tmp_path: Path, mode: str) -> None:
    """What `loom serve` composes: the bus's durable log on the server's one NATS connection,
    or none with --nats off (a durable subscription then says how to get one)."""
    with anyio.fail_after(60):
        async with (
            open_nats(mode, store_dir=tmp_path / "nats") as nats,
            _durable_log(nats) as durable_log,
            EventBus(durable_log=durable_log) as bus,
        ):
            if mode == "off":
                assert durable_log is None
                with pytest.raises(DurabilityUnavailable):
                    bus.subscribe("orders.>", durable="billing")
                return
            async with bus.subscribe("orders.>", durable="billing") as sub:
                await bus.publish("orders.1", Event(type="order", payload=b"one"))
                message = await sub.__anext__()
                assert (message.topic, message.event.payload, message.attempt) == (
                    "orders.1",
                    b"one",
                    1,
                )
