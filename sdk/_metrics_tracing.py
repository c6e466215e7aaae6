"""The span pipe's own figures as metrics (``sdk/_span_pipe.py``): what tracing kept, and what
it dropped because the exporter process fell behind or was gone, so that no span is lost
without a count (``docs/observability.md``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.metrics import Observation

    from ._span_pipe import SpanPipeStats

__all__ = ["tracing_instruments"]

Instrument = Callable[..., None]


def tracing_instruments(
    counter: Instrument, gauge: Instrument, provider: Callable[[], object | None]
) -> None:
    """``loom.trace.spans.*`` from the span pipe of the tracer provider ``provider()`` gives
    (nothing when tracing is off, or the provider was built without one)."""
    from opentelemetry.metrics import Observation

    def stats() -> SpanPipeStats | None:
        pipe = getattr(provider(), "loom_span_pipe", None)
        return None if pipe is None else pipe.statistics()

    def read(
        pick: Callable[[SpanPipeStats], Iterable[Observation]],
    ) -> Callable[[], Iterable[Observation]]:
        def observe() -> Iterable[Observation]:
            s = stats()
            return () if s is None else pick(s)

        return observe

    counter(
        "loom.trace.spans.recorded",
        read(lambda s: [Observation(s.recorded)]),
        description="Finished spans taken for export",
    )
    counter(
        "loom.trace.spans.dropped",
        read(
            lambda s: [
                Observation(s.dropped, {"reason": "buffer_full"}),
                Observation(s.lost, {"reason": "exporter_gone"}),
                Observation(s.export_failed, {"reason": "export_failed"}),
            ]
        ),
        description=(
            "Finished spans never exported: the buffer full, the exporter process gone, "
            "or the collector not taking them"
        ),
    )
    gauge(
        "loom.trace.spans.buffered",
        read(lambda s: [Observation(s.buffered)]),
        description="Finished spans waiting for the exporter process",
    )
