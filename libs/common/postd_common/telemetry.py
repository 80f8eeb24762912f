"""OpenTelemetry setup: traces go to OTLP when an endpoint is configured.

Without an endpoint a tracer provider is still installed (spans are created and
trace context still flows through gRPC metadata and Kafka headers, so log lines
carry trace ids) but nothing is exported. Span attributes are set by our own code
only from non-secret values (tenant, platform, job id); see tests.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_installed: TracerProvider | None = None


def setup_tracing(
    service: str,
    otlp_endpoint: str | None,
    *,
    extra_processors: list[SpanProcessor] | None = None,
) -> TracerProvider:
    """Install (once per process) and return the tracer provider."""
    global _installed
    if _installed is not None:
        for processor in extra_processors or ():
            _installed.add_span_processor(processor)
        return _installed
    provider = TracerProvider(resource=Resource.create({"service.name": f"postd-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    for processor in extra_processors or ():
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _installed = provider
    return provider


def shutdown_tracing() -> None:
    if _installed is not None:
        _installed.shutdown()
