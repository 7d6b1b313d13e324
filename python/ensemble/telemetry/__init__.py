"""Observability: Prometheus metrics (`/metrics`) and OpenTelemetry traces (OTLP/HTTP).

Both are set up per worker process by `setup()` from the runtime's startup. The rest of the code
reaches them through the module globals `metrics` and `tracing`, which stay `None` when the feature
is off, so a disabled feature costs one attribute load and an `is None` test per hook, nothing more.
Tracing is wired in by wrapping (the app's handler, the gateway's call path: routing and each
upstream call) only when `telemetry.otlp_endpoint` is set: with it unset no tracer code is on the
hot path.

With `server.workers > 1` prometheus-client runs in its multiprocess mode: `ensemble serve` points
`PROMETHEUS_MULTIPROC_DIR` at a fresh per-run directory before the workers start, every worker
writes its samples there, and whichever worker answers a scrape aggregates all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ensemble.config.schema import Config
    from ensemble.telemetry.metrics import Metrics
    from ensemble.telemetry.tracing import Tracing

metrics: Metrics | None = None
tracing: Tracing | None = None


def setup(config: Config) -> None:
    """Create this process's metrics and tracer (idempotent per process). Each is imported only when
    enabled: prometheus_client fixes its multiprocess mode at import, and the OpenTelemetry SDK must
    not load at all with tracing off (tests/unit/test_telemetry_off.py)."""
    global metrics, tracing
    if config.telemetry.prometheus and metrics is None:
        from ensemble.telemetry.metrics import Metrics

        metrics = Metrics()
    if config.telemetry.otlp_endpoint and tracing is None:
        from ensemble.telemetry.tracing import Tracing

        tracing = Tracing(config.telemetry.otlp_endpoint)


def shutdown() -> None:
    global metrics, tracing
    if tracing is not None:
        tracing.shutdown()
        tracing = None
    if metrics is not None:
        metrics.close()
        metrics = None


def set_redis_sync_lag(seconds: float) -> None:
    """For the Redis syncs: how far behind Redis this worker is (a key change's publish-to-apply
    time, or the round trip that brought the latest shared rate-limit view)."""
    m = metrics
    if m is not None:
        m.redis_sync_lag.set(seconds)
