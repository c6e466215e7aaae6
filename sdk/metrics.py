"""``loom serve``'s metrics, for a process that composes a server of its own.

``open_metrics(metrics_config(os.environ))`` gives a :class:`ServeMetrics`: hand its
``meter_provider`` to ``AgentRuntime(meter_provider=...)`` and
``ModelRouter.from_config(..., meter_provider=...)``, call ``observe(bus, runtime=...,
server=..., router=..., durable=...)`` once they are up, and answer ``/metrics`` with
``prometheus()``. What is measured, under which names: ``docs/observability.md``.
"""

from loom.runtime.lowlevel import set_public_module as _set_public_module

from ._metrics import MetricsConfig as MetricsConfig
from ._metrics import ServeMetrics as ServeMetrics
from ._metrics import metrics_config as metrics_config
from ._metrics import open_metrics as open_metrics

__all__ = ["MetricsConfig", "ServeMetrics", "metrics_config", "open_metrics"]

_set_public_module(globals())
