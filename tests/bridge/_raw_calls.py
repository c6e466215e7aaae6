"""Raw calls to every method a live server serves: the methods listed from the server itself
(server reflection) and from Loom's .proto files, each called with bytes the test chooses,
and a Hypothesis strategy of well-formed messages of any type, made from its descriptor.

A method added to a service, or a service added to the server (in reflection or in
``proto/loom/v1``), is called by the tests that use these helpers without a change to them.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import grpc
import grpc.aio
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]  # noqa: F401  (its descriptors)
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)
from hypothesis import strategies as st

from loom.bridge import _generated


@dataclass(frozen=True)
class Method:
    path: str  # /package.Service/Method
    descriptor: MethodDescriptor

    @property
    def request_type(self) -> Descriptor:
        return self.descriptor.input_type

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)


def loom_services() -> set[str]:
    """Every service declared in Loom's .proto files (``loom.bridge._generated``)."""
    names: set[str] = set()
    for info in pkgutil.iter_modules(_generated.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{_generated.__name__}.{info.name}")
            names.update(s.full_name for s in module.DESCRIPTOR.services_by_name.values())
    return names


async def reflected_services(ch: grpc.aio.Channel) -> set[str]:
    """The services the server lists through server reflection."""
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    call = stub.ServerReflectionInfo()
    with anyio.fail_after(5):
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.done_writing()
        reply = await call.read()
    call.cancel()
    return {s.name for s in reply.list_services_response.service}


def methods_of(services: set[str]) -> list[Method]:
    """Every method of these services, sorted."""
    pool = descriptor_pool.Default()
    return [
        Method(f"/{name}/{m.name}", m)
        for name in sorted(services)
        for m in pool.FindServiceByName(name).methods
    ]


async def served_methods(ch: grpc.aio.Channel) -> list[Method]:
    """Every method of every service the server lists or Loom's protos declare, sorted."""
    return methods_of(await reflected_services(ch) | loom_services())


async def call_raw(
    ch: grpc.aio.Channel,
    method: Method,
    payload: bytes,
    *,
    timeout: float = 5.0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[grpc.StatusCode, str]:
    """Send ``payload`` as the request (the first frame of a request stream, then end the
    stream) and return the status the call ends with. A response stream is read up to its
    first message (then OK: the call was served) or its end."""
    path = method.path
    kw: dict[str, Any] = {"request_serializer": _as_is, "response_deserializer": _as_is}
    call: Any
    try:
        with anyio.fail_after(timeout + 2):
            if not method.client_streaming and not method.server_streaming:
                await ch.unary_unary(path, **kw)(payload, timeout=timeout, metadata=metadata)
            elif not method.client_streaming:
                call = ch.unary_stream(path, **kw)(payload, timeout=timeout, metadata=metadata)
                try:
                    await call.read()
                finally:
                    call.cancel()
            else:
                if method.server_streaming:
                    call = ch.stream_stream(path, **kw)(timeout=timeout, metadata=metadata)
                else:
                    call = ch.stream_unary(path, **kw)(timeout=timeout, metadata=metadata)
                try:
                    await call.write(payload)
                    await call.done_writing()
                except (grpc.aio.UsageError, asyncio.InvalidStateError):
                    pass  # the server ended the call before we were done writing
                if method.server_streaming:
                    while await call.read() is not grpc.aio.EOF:
                        pass
                else:
                    await call
                return await call.code(), await call.details()
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _as_is(data: bytes) -> bytes:
    return data


# ---------------------------------------------------------------- messages from descriptors

_F = FieldDescriptor
_INTS: Mapping[int, tuple[int, int]] = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}
# Text a Loom server gives meaning to, and text it should find odd.
_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            ">",
            "*",
            "a.>",
            "a..b",
            "agent.fuzz.replies",
            "loom.lifecycle.agent.failed",
            "loom.dlq.x",
            "\x00",
            "é" * 3,
            "x" * 300,
            "{}",
            '{"a": [[[[[[1]]]]]]}',
            '{"$ref": "file:///etc/passwd"}',
            "not json",
        ]
    ),
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == _F.TYPE_STRING:
        return _TEXT
    if kind == _F.TYPE_BYTES:
        return st.binary(max_size=32)
    if kind == _F.TYPE_BOOL:
        return st.booleans()
    if kind == _F.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == _F.TYPE_DOUBLE:
        return st.floats()
    if kind == _F.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        known = st.sampled_from([v.number for v in enum.values])
        if enum.is_closed:
            return known
        return st.one_of(known, st.integers(-(2**31), 2**31 - 1))  # proto3: any int32
    low, high = _INTS[kind]
    return st.integers(low, high)


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None
    return field.message_type


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type == _F.TYPE_MESSAGE:
        nested = _message_type(field)
        if nested.GetOptions().map_entry:
            key = _scalar(nested.fields_by_name["key"])
            value = _value(nested.fields_by_name["value"], depth)
            return None if value is None else st.dictionaries(key, value, max_size=3)
        if depth >= 3:
            return None
        one: st.SearchStrategy[Any] = messages(nested, depth + 1)
    else:
        one = _scalar(field)
    return st.lists(one, max_size=3) if field.is_repeated else one


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Well-formed messages of the type ``descriptor`` names, with any subset of its fields
    set to any value of their type (nested up to 3 deep)."""
    cls = GetMessageClass(descriptor)
    fields = {}
    for field in descriptor.fields:
        strategy = _value(field, depth)
        if strategy is not None:
            fields[field.name] = strategy
    return st.fixed_dictionaries({}, optional=fields).map(
        lambda values: _build(cls, descriptor, values)
    )


def _build(cls: type[Message], descriptor: Descriptor, values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(msg, name)
        if isinstance(value, dict):  # a map
            nested = _message_type(field).fields_by_name["value"].type == _F.TYPE_MESSAGE
            for key, item in value.items():
                if nested:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif isinstance(value, list):
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg
