"""Shared plumbing for every POSTD service: configuration, logging, PostgreSQL,
Kafka, gRPC, telemetry and metrics. Each piece is used once, from here."""
