"""A real OTLP receiver for the tests: a gRPC server implementing the collector's
``TraceService`` and ``MetricsService`` (``opentelemetry-proto``) on ``127.0.0.1:0``, keeping
what it is sent, so a test asserts what a process really exported over the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import grpc
import grpc.aio
import msgspec
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["ExportedSpan", "OtlpReceiver", "otlp_receiver"]

_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


class ExportedSpan(msgspec.Struct, frozen=True, kw_only=True):
    """One span as it arrived (ids in hex, as a traceparent writes them)."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    status_code: int


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, which) if which else None


class OtlpReceiver:
    """What the receiver holds: the spans; the metrics' names, and the last value of each
    sum or gauge point by (metric, its ``topic`` attribute or ``""``)."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.trace_exports = 0
        self.metric_exports = 0
        self.metric_names: set[str] = set()
        self.metric_points: dict[tuple[str, str], float] = {}
        self.port = 0
        self._changed = anyio.Event()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        self.trace_exports += 1
        for rs in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in rs.resource.attributes}
            service = str(attrs.get("service.name", ""))
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.spans.append(
                        ExportedSpan(
                            service=service,
                            name=span.name,
                            kind=_KINDS.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status_code=span.status.code,
                        )
                    )
        self._changed.set()
        self._changed = anyio.Event()

    def _add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        self.metric_exports += 1
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    self.metric_names.add(metric.name)
                    which = metric.WhichOneof("data")
                    if which not in ("sum", "gauge"):
                        continue
                    for point in getattr(metric, which).data_points:
                        attrs = {a.key: _value(a.value) for a in point.attributes}
                        value = (
                            point.as_int
                            if point.WhichOneof("value") == "as_int"
                            else point.as_double
                        )
                        self.metric_points[(metric.name, str(attrs.get("topic", "")))] = value
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for_metrics(
        self, done: Callable[[set[str]], bool], *, timeout: float
    ) -> set[str]:
        """The metric names once ``done(names)`` holds; fails after ``timeout``."""
        with anyio.move_on_after(timeout):
            while not done(self.metric_names):
                await self._changed.wait()
            return self.metric_names
        raise AssertionError(f"the receiver did not get the metrics; it has {self.metric_names}")

    async def wait_until(
        self, done: Callable[[list[ExportedSpan]], bool], *, timeout: float
    ) -> list[ExportedSpan]:
        """The spans once ``done(spans)`` holds; fails after ``timeout`` with what came."""
        with anyio.move_on_after(timeout):
            while not done(self.spans):
                await self._changed.wait()
            return self.spans
        names = sorted(f"{s.service}: {s.name}" for s in self.spans)
        raise AssertionError(f"the receiver did not get the expected spans; it has {names}")


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver._add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    async def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: object
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._receiver._add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    """An OTLP/gRPC receiver on a free loopback port (asyncio only: grpc.aio)."""
    receiver = OtlpReceiver()
    server = grpc.aio.server()
    # The generated registration functions carry no annotations.
    add_traces = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
    add_metrics = metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server
    add_traces(_Traces(receiver), server)  # type: ignore[no-untyped-call]
    add_metrics(_Metrics(receiver), server)  # type: ignore[no-untyped-call]
    receiver.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop(grace=None)
