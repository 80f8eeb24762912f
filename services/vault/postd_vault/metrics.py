"""The vault's Prometheus metrics. Labels are closed sets (scope, stage, operation,
outcome): never a tenant, connection, name or anything secret."""

from __future__ import annotations

from prometheus_client import Counter

DECRYPT_FAILURES = Counter(
    "postd_vault_decrypt_failures_total",
    "Stored secrets that failed authentication (tampered, or moved to another owner).",
    ["scope", "stage"],
)
KMS_ERRORS = Counter(
    "postd_vault_kms_errors_total",
    "KMS calls that failed, by operation and error.",
    ["provider", "operation", "error"],
)
DEK_CACHE_LOOKUPS = Counter(
    "postd_vault_dek_cache_lookups_total", "Data-key cache lookups, by result.", ["result"]
)
REWRAPPED = Counter(
    "postd_vault_rewrapped_total", "Data keys rewrapped to the primary KEK version."
)
