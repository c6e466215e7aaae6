"""Generate ``bridge/_generated`` from ``proto/loom/v1/*.proto``, or check that it is fresh.

Usage::

    python scripts/gen_protos.py            # regenerate bridge/_generated in place
    python scripts/gen_protos.py --check    # regenerate into a temp dir; exit 1 if stale

It runs ``grpc_tools.protoc`` from the ``grpcio-tools`` version pinned in pyproject.toml (and
refuses any other, since each version writes different code) with ``--python_out``,
``--pyi_out`` and ``--grpc_python_out``, then post-processes the output:

* protoc writes ``from loom.v1 import event_pb2``, which would resolve against our own ``loom``
  package; every such import becomes ``from loom.bridge._generated import event_pb2``, and the
  module names recorded in the descriptors follow.
* grpcio-tools writes no type stubs for the ``*_pb2_grpc`` modules, so this script writes a
  ``.pyi`` for each from the service descriptors (shaped like mypy-protobuf's: one servicer
  base that sync and ``grpc.aio`` implementations both satisfy, and a stub whose type follows
  the channel it is built on).
* ``*_pb2_grpc`` modules of files without a service are empty, and are left out.

The output depends only on the ``.proto`` files and the pinned tool, so ``--check`` can
compare it byte for byte with what is committed.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import re
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "loom" / "v1"
OUT_DIR = ROOT / "bridge" / "_generated"
PROTO_PACKAGE = "loom.v1"
PY_PACKAGE = "loom.bridge._generated"
# Hand-written files in the output directory; everything else there is ours to replace.
KEEP = frozenset({"__init__.py"})

_IMPORT = re.compile(r"^from loom\.v1 import ", re.MULTILINE)
_MODULE_NAME = re.compile(r"'loom\.v1\.(\w+_pb2)'")


def pinned_tools_version() -> str:
    """The ``grpcio-tools==X`` pin of pyproject.toml's dev extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["optional-dependencies"]["dev"]:
        name, sep, version = requirement.partition("==")
        if sep and name.strip() == "grpcio-tools":
            return str(version.strip())
    raise SystemExit("pyproject.toml pins no grpcio-tools==X in the dev extra")


def check_tools_version() -> None:
    pinned = pinned_tools_version()
    installed = importlib.metadata.version("grpcio-tools")
    if installed != pinned:
        raise SystemExit(
            f"grpcio-tools {installed} is installed but pyproject.toml pins {pinned}; "
            "the generated code must come from the pinned version (run `make install`)"
        )


def run_protoc(out: Path) -> descriptor_pb2.FileDescriptorSet:
    """Run protoc on every .proto of loom.v1 into ``out``; return their descriptors."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # (no stubs) imported late: --help works without it

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_DIR}")
    well_known = Path(protoc.__file__).parent / "_proto"
    descriptor_set = out / "descriptors.binpb"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--descriptor_set_out={descriptor_set}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see above)")
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    descriptor_set.unlink()
    return files


def rewrite_imports(text: str, name: str) -> str:
    text = _IMPORT.sub(f"from {PY_PACKAGE} import ", text)
    text = _MODULE_NAME.sub(rf"'{PY_PACKAGE}.\1'", text)
    if re.search(r"^\s*(from|import) loom\.v1\b", text, re.MULTILINE):
        raise SystemExit(f"{name}: an import of loom.v1 was left unrewritten")
    return text


# ------------------------------------------------------------------ _pb2_grpc.pyi


def _module(proto_name: str) -> str:
    """``loom/v1/event.proto`` -> ``event_pb2``."""
    return Path(proto_name).stem + "_pb2"


def _py_type(type_name: str, files: dict[str, descriptor_pb2.FileDescriptorProto]) -> str:
    """``.loom.v1.Event`` -> ``_event_pb2.Event``."""
    short = type_name.removeprefix(f".{PROTO_PACKAGE}.")
    for proto in files.values():
        if any(m.name == short for m in proto.message_type):
            return f"_{_module(proto.name)}.{short}"
    raise SystemExit(f"message {type_name} is not in package {PROTO_PACKAGE}")


def grpc_stub(
    proto: descriptor_pb2.FileDescriptorProto, files: dict[str, descriptor_pb2.FileDescriptorProto]
) -> str:
    """The ``.pyi`` text of ``proto``'s ``_pb2_grpc`` module."""
    modules: set[str] = set()
    body: list[str] = []
    for service in proto.service:
        s = service.name
        sync_attrs: list[str] = []
        async_attrs: list[str] = []
        servicer: list[str] = []
        handlers = []
        for method in service.method:
            req = _py_type(method.input_type, files)
            resp = _py_type(method.output_type, files)
            modules.update(t.split(".")[0] for t in (req, resp))
            kind = ("Stream" if method.client_streaming else "Unary") + (
                "Stream" if method.server_streaming else "Unary"
            )
            sync_attrs.append(f"    {method.name}: grpc.{kind}MultiCallable[{req}, {resp}]")
            async_attrs.append(f"    {method.name}: grpc.aio.{kind}MultiCallable[{req}, {resp}]")
            request = (
                f"request_iterator: _MaybeAsyncIterator[{req}]"
                if method.client_streaming
                else f"request: {req}"
            )
            returns = (
                f"collections.abc.Iterator[{resp}] | collections.abc.AsyncIterator[{resp}]"
                if method.server_streaming
                else f"{resp} | collections.abc.Awaitable[{resp}]"
            )
            servicer += [
                "    @abc.abstractmethod",
                f"    def {method.name}(self, {request}, context: _ServicerContext) -> {returns}: ...",  # noqa: E501
            ]
            handlers.append(method.name)
        body += [
            "",
            f"class {s}Stub:",
            "    @typing.overload",
            f"    def __new__(cls, channel: grpc.Channel) -> {s}Stub: ...",
            "    @typing.overload",
            f"    def __new__(cls, channel: grpc.aio.Channel) -> {s}AsyncStub: ...  # type: ignore[misc]",  # noqa: E501
            *sync_attrs,
            "",
            f"class {s}AsyncStub:",
            "    def __init__(self, channel: grpc.aio.Channel) -> None: ...",
            *async_attrs,
            "",
            f"class {s}Servicer(metaclass=abc.ABCMeta):",
            *servicer,
            "",
            f"def add_{s}Servicer_to_server(",
            f"    servicer: {s}Servicer, server: grpc.Server | grpc.aio.Server",
            ") -> None: ...",
        ]
    imports = [f"from {PY_PACKAGE} import {m[1:]} as {m}" for m in sorted(modules)]
    head = [
        f"# Generated by scripts/gen_protos.py from {proto.name}. DO NOT EDIT!",
        '"""Types of the gRPC service classes (grpcio-tools writes no stubs for them)."""',
        "",
        "import abc",
        "import collections.abc",
        "import typing",
        "",
        "import grpc",
        "import grpc.aio",
        "",
        *imports,
        "",
        '_T = typing.TypeVar("_T")',
        "",
        "class _MaybeAsyncIterator(",
        "    collections.abc.AsyncIterator[_T], collections.abc.Iterator[_T], metaclass=abc.ABCMeta",  # noqa: E501
        "): ...",
        "",
        "# What a servicer method receives: a sync or an asyncio context, so that both kinds of",
        "# implementation (which name the one they get) override the abstract method soundly.",
        "class _ServicerContext(grpc.ServicerContext, grpc.aio.ServicerContext):  # type: ignore[misc, type-arg]",  # noqa: E501
        "    ...",
        "",
        "GRPC_GENERATED_VERSION: str",
        "GRPC_VERSION: str",
    ]
    return "\n".join([*head, *body]) + "\n"


# ------------------------------------------------------------------ driver


def generate(target: Path) -> None:
    """Write the generated modules of every loom.v1 .proto into ``target`` (flat)."""
    check_tools_version()
    with tempfile.TemporaryDirectory(prefix="loom-proto-") as tmp:
        raw = Path(tmp)
        descriptor_set = run_protoc(raw)
        files = {f.name: f for f in descriptor_set.file if f.package == PROTO_PACKAGE}
        for path in sorted((raw / "loom" / "v1").iterdir()):
            if path.name.endswith("_pb2_grpc.py"):
                proto = files[f"loom/v1/{path.name.removesuffix('_pb2_grpc.py')}.proto"]
                if not proto.service:
                    continue  # grpcio-tools writes an empty module for a file without services
                (target / (path.stem + ".pyi")).write_text(grpc_stub(proto, files))
            text = rewrite_imports(path.read_text(), path.name)
            (target / path.name).write_text(text)


def generated_files(directory: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in KEEP and p.suffix in {".py", ".pyi"}
    }


def regenerate() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in generated_files(OUT_DIR):
        (OUT_DIR / name).unlink()
    generate(OUT_DIR)
    shutil.rmtree(OUT_DIR / "__pycache__", ignore_errors=True)
    print(f"generated {len(generated_files(OUT_DIR))} files in {OUT_DIR.relative_to(ROOT)}")


def check(committed_dir: Path = OUT_DIR) -> int:
    """Compare ``committed_dir`` with freshly generated code; 0 if equal, else 1 (and why)."""
    with tempfile.TemporaryDirectory(prefix="loom-proto-check-") as tmp:
        fresh_dir = Path(tmp)
        generate(fresh_dir)
        fresh = generated_files(fresh_dir)
    committed = generated_files(committed_dir) if committed_dir.is_dir() else {}
    problems: list[str] = []
    for name in sorted(fresh.keys() - committed.keys()):
        problems.append(f"missing: {name}")
    for name in sorted(committed.keys() - fresh.keys()):
        problems.append(f"not generated from any .proto (stale): {name}")
    for name in sorted(fresh.keys() & committed.keys()):
        if fresh[name] != committed[name]:
            problems.append(f"differs: {name}")
            diff = difflib.unified_diff(
                committed[name].decode().splitlines(),
                fresh[name].decode().splitlines(),
                f"committed/{name}",
                f"fresh/{name}",
                lineterm="",
                n=1,
            )
            problems.extend("    " + line for line in list(diff)[:20])
    rel = committed_dir.relative_to(ROOT) if committed_dir.is_relative_to(ROOT) else committed_dir
    if problems:
        print(f"{rel} is stale against proto/ (run `make proto` and commit):", file=sys.stderr)
        print("\n".join("  " + p for p in problems), file=sys.stderr)
        return 1
    print(f"{rel} is fresh ({len(fresh)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="generate into a temp dir and fail if bridge/_generated differs",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=OUT_DIR,
        help="with --check: the directory to check (default: bridge/_generated)",
    )
    args = parser.parse_args()
    if args.check:
        return check(args.dir)
    regenerate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
