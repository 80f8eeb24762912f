"""Prometheus metrics: each service serves ``/metrics`` on its own loopback port."""

from __future__ import annotations

from prometheus_client import start_http_server


def serve_metrics(address: str) -> None:
    """Start the metrics HTTP server on ``host:port`` in a daemon thread.
    Raises ``OSError`` when the port is taken."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host)
