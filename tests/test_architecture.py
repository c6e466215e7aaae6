"""The house's walls, read from the source with ``ast`` (every import: top level, inside
functions, under ``TYPE_CHECKING``); ``docs/architecture.md`` draws them.

* Packages point one way: ``loom`` (sdk/) -> ``loom.bridge`` | ``loom.cluster`` | ``loom.web``
  -> ``loom.runtime``; ``loom.web`` imports neither grpc, nats, the bridge nor the cluster.
  The runtime never imports grpc, the bridge or the SDK; the bridge never imports the SDK;
  the generated ``_pb2`` modules are imported only inside bridge/.
* Floors inside runtime/: a floor imports only floors below it (see ``FLOORS``).
* Privacy: a module of package P imports ``_private`` modules of P, of P's subpackages and of
  P's parent packages in the same tree (runtime/collab/ uses the runtime's core, loom.cli the
  SDK's machinery), never of another package: sdk/ imports ``loom.bridge``, not
  ``loom.bridge._client``; cognition imports ``loom.runtime.llm``, not its ``_types``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Folder -> the import package it holds (pyproject.toml's package-dir), for the trees checked.
TREES = {
    "runtime": "loom.runtime",
    "bridge": "loom.bridge",
    "cluster": "loom.cluster",
    "web": "loom.web",
    "sdk": "loom",
    "benchmarks": "benchmarks",
    "examples": "examples",
}
# Top packages: privacy never crosses from one to another, even where one's name nests in
# another's (loom.bridge is not a subpackage of loom for this purpose: it is its own folder).
TOPS = (
    "loom.runtime",
    "loom.bridge",
    "loom.cluster",
    "loom.web",
    "loom",
    "benchmarks",
    "examples",
)

# The floors of runtime/, lowest first. A module imports only modules of its own floor group
# or of lower floors; the groups sharing a floor number are siblings, which import each other
# only where SIBLINGS allows it (so no cycle can form between them).
_CORE = (
    "_approval_uses",
    "_agent_card",
    "_budget",
    "_errors",
    "_event",
    "_failure",
    "_envelope_build",
    "_ids",
    "_public",
    "_qos",
    "_sqlite_file",
    "_span_records",
    "_topics",
    "_tracing",
)
_BUS = ("_bus", "_subscription", "_stats", "_waiter", "_transport", "_durable", "_durable_sub")
_ACTORS = (
    "_agent_errors",
    "_approvals",
    "_questions",
    "_approval_store",
    "_behaviour",
    "_dead_letters",
    "_context",
    "_cell",
    "_runtime",
    "_remote",
    "_supervision",
    "_timers",
    "_directory",
    "lowlevel",
)
FLOORS: dict[str, int] = {"core": 0, "bus": 1, "tools": 1, "resilience": 1}
FLOORS |= {"collab": 2, "llm": 2, "memory": 2}
FLOORS |= {"actors": 3, "cognition": 4}
# Sibling groups that may import each other, in one direction only: memory may build llm
# messages (llm never imports memory); the tool registry guards calls with resilience policies
# (resilience never imports tools); bus and tools stay apart, as do collab and the others.
SIBLINGS = {("memory", "llm"), ("tools", "resilience")}
# testing/ is the harness shipped as library code: it may import anything in runtime.
ANYTHING = "testing"

# Imports of private modules from outside their tree that are deliberate, with the reason.
# The raw gRPC baselines of the benchmarks measure grpc itself, without Loom: they speak the
# loom.v1 wire with the generated types directly, which no public module exports on purpose.
EXCEPTIONS = {
    ("benchmarks._python_floor", "loom.bridge._generated.bridge_pb2"),
    ("benchmarks._python_floor", "loom.bridge._generated.event_pb2"),
    ("benchmarks._raw_grpc", "loom.bridge._generated.bridge_pb2"),
    ("benchmarks._raw_grpc", "loom.bridge._generated.event_pb2"),
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the checked trees: dotted name -> (file, is a package)."""
    found = {}
    for folder, package in TREES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if "_generated" in parts:
                continue  # generated code, checked fresh by `make proto-check`
            is_package = parts[-1] == "__init__"
            name = ".".join((package, *(parts[:-1] if is_package else parts)))
            found[name] = (path, is_package)
    return found


MODULES = _modules()


def _imports(name: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in the module."""
    path, is_package = MODULES[name]
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                # `from pkg import _mod` imports the module pkg._mod.
                candidate = f"{source}.{alias.name}"
                is_module = candidate in MODULES or "._generated." in candidate
                yield (candidate if is_module else source), node.lineno


IMPORTS = {name: sorted(set(_imports(name))) for name in MODULES}


def _top(module: str) -> str | None:
    return next((t for t in TOPS if module == t or module.startswith(t + ".")), None)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _package(name: str) -> str:
    """The package a module belongs to (itself, for a package)."""
    return name if MODULES[name][1] else name.rpartition(".")[0]


def _owner(module: str) -> str | None:
    """The package whose private module ``module`` is, or None if it is public."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _group(module: str) -> str | None:
    """The floor group of a runtime module, or None outside runtime/."""
    if not _within(module, "loom.runtime"):
        return None
    parts = module.split(".")
    if len(parts) == 2 or (len(parts) == 3 and parts[2] in (*_ACTORS, "__init__")):
        return "actors"
    if parts[2] in _CORE:
        return "core"
    if parts[2] in _BUS:
        return "bus"
    if parts[2] in (*FLOORS, ANYTHING):
        return parts[2]
    raise AssertionError(f"{module}: on no floor; add it to tests/test_architecture.py")


def test_every_runtime_module_is_on_a_floor() -> None:
    for name in MODULES:
        _group(name)  # raises for a module nobody placed


def test_the_scan_sees_the_tree() -> None:
    # Guards the guard: the scan finds modules and imports of every kind, including the
    # lazily imported, the TYPE_CHECKING ones and relative ones.
    assert {"loom", "loom.cli", "loom.runtime.lowlevel", "loom.bridge._client"} <= set(MODULES)
    assert any(m == "loom.runtime.tools._mcp" for m, _ in IMPORTS["loom.runtime.tools"])
    assert any(m == "loom.runtime._errors" for m, _ in IMPORTS["loom.runtime._bus"])
    assert any(m == "loom.bridge" for m, _ in IMPORTS["loom._agent"])  # under TYPE_CHECKING


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _group(n) is not None))
def test_floors(name: str) -> None:
    group = _group(name)
    assert group is not None
    wrong = []
    for imported, line in IMPORTS[name]:
        other = _group(imported)
        if other is None or other == group or group == ANYTHING:
            continue
        if other == ANYTHING:
            wrong.append(f"line {line}: {imported} (testing/ is for tests and harnesses)")
        elif FLOORS[other] > FLOORS[group]:
            wrong.append(f"line {line}: {imported} is on a higher floor ({other})")
        elif FLOORS[other] == FLOORS[group] and (group, other) not in SIBLINGS:
            wrong.append(f"line {line}: {imported} is a sibling floor ({other})")
    assert not wrong, f"{name} ({group}) imports upward:\n" + "\n".join(wrong)


# What each top package must never import.
# The OpenTelemetry SDK and its exporter are built by the outermost layer only (sdk/_telemetry.py,
# from OTEL_* and flags); below it, the API alone, with the provider passed in. So are the
# metrics' readers and the Prometheus text (sdk/_metrics.py).
_OTEL_SDK = ("opentelemetry.sdk", "opentelemetry.exporter", "prometheus_client")
FORBIDDEN = {
    "loom.runtime": (
        "grpc",
        # The a2a-sdk's client package imports grpc as it loads (its client factory): the A2A
        # tool lives in the SDK (sdk/_a2a_tool.py).
        "a2a.client",
        "nats",
        "loom.bridge",
        "loom.cluster",
        "loom.web",
        "loom.cli",
        "loom._*",
        *_OTEL_SDK,
    ),
    "loom.bridge": ("loom.cluster", "loom.web", "loom.cli", "loom._*", *_OTEL_SDK),
    "loom.cluster": ("grpc", "loom.bridge", "loom.web", "loom.cli", "loom._*", *_OTEL_SDK),
    # The dashboard reads the runtime in process: no wire, no NATS, no SDK. (The a2a-sdk that
    # web/_a2a*.py use loads grpc itself, trying its optional gRPC handler: the SDK's import,
    # which web never uses; this checks Loom's own imports.)
    "loom.web": ("grpc", "nats", "loom.bridge", "loom.cluster", "loom.cli", "loom._*", *_OTEL_SDK),
}


def _forbidden(top: str, imported: str) -> bool:
    for rule in FORBIDDEN.get(top, ()):
        if rule == "loom._*":
            # The SDK is the package ``loom`` itself: its modules are loom._x (and loom.cli).
            if _top(imported) == "loom" and imported != "loom":
                return True
            if imported == "loom":
                return True
        elif _within(imported, rule):
            return True
    return False


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _top(n) in FORBIDDEN))
def test_arrows_point_one_way(name: str) -> None:
    top = _top(name)
    assert top is not None
    wrong = [f"line {line}: {m}" for m, line in IMPORTS[name] if _forbidden(top, m)]
    assert not wrong, (
        f"{name} imports against the arrows sdk -> bridge|cluster -> runtime:\n" + "\n".join(wrong)
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_generated_code_stays_in_the_bridge(name: str) -> None:
    wrong = [
        f"line {line}: {m}"
        for m, line in IMPORTS[name]
        if m.endswith(("_pb2", "_pb2_grpc"))
        and not _within(name, "loom.bridge")
        and (name, m) not in EXCEPTIONS
    ]
    assert not wrong, f"{name} imports generated protobuf modules:\n" + "\n".join(wrong)


def _may_import_private(name: str, imported: str) -> bool:
    owner = _owner(imported)
    if owner is None or _top(imported) is None or (name, imported) in EXCEPTIONS:
        return True  # public, not loom's (third-party privacy is not this test's), or listed
    if _top(owner) != _top(name):
        return False  # another tree's private module: it exports what others may use
    package = _package(name)
    # Its own package's, its subpackages', its parents' (the shared core of its tree).
    return _within(owner, package) or _within(package, owner)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_other_package_s_private_modules(name: str) -> None:
    wrong = [f"line {line}: {m}" for m, line in IMPORTS[name] if not _may_import_private(name, m)]
    assert not wrong, (
        f"{name} imports another package's private modules (import them from the "
        "package's public face; export them there if need be):\n" + "\n".join(wrong)
    )


def test_the_privacy_rule() -> None:
    allowed = _may_import_private
    assert allowed("loom.runtime.collab._request", "loom.runtime._event")  # its tree's core
    assert allowed("loom.runtime._context", "loom.runtime.collab._bound")  # a subpackage's
    assert allowed("loom.cli._runner", "loom._remote")  # the SDK's CLI composes the SDK
    assert not allowed("loom._remote", "loom.bridge._client")  # another tree
    assert not allowed("loom.bridge._calls", "loom.runtime.tools._tool")
    assert not allowed("loom.runtime.cognition._loop", "loom.runtime.llm._types")  # a sibling
    assert not allowed("benchmarks.bus", "loom.runtime._bus")
