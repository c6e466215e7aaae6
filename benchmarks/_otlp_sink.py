"""An OTLP/gRPC trace and metrics receiver in a process of its own, for the tracing and
metrics lines of the benchmarks: it answers every export and keeps nothing, as a collector on
the same host would (its work is not on the measured process's cores' GIL).

Usage: ``python -m benchmarks._otlp_sink``; prints its port on stdout, serves until killed.
"""

from __future__ import annotations

import asyncio

import grpc.aio
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class _Sink(trace_service_pb2_grpc.TraceServiceServicer):
    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsSink(metrics_service_pb2_grpc.MetricsServiceServicer):
    async def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: object
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        return metrics_service_pb2.ExportMetricsServiceResponse()


async def main() -> None:
    server = grpc.aio.server()
    add = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
    add(_Sink(), server)  # type: ignore[no-untyped-call]
    add_metrics = metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server
    add_metrics(_MetricsSink(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
