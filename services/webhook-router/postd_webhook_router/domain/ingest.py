"""Inbound: verify, deduplicate, store, answer — within the platforms' deadlines.

Normalising and routing happen later (:mod:`.processing`), so an answer never waits
on the connectors service or Kafka; only on one PostgreSQL transaction.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from postd_webhook_router import metrics
from postd_webhook_router.domain.model import (
    Challenge,
    InboundRequest,
    InboundSource,
    IngestResult,
    PendingInbound,
    ProcessingState,
    Rejection,
    StoredInbound,
    Verdict,
    Verified,
)
from postd_webhook_router.domain.processing import Handoff
from postd_webhook_router.domain.verifiers import Verifier
from postd_webhook_router.ports import WebhookStore

COMMON_HEADERS = (
    "Content-Type",
    "Content-Length",
    "User-Agent",
    "X-Forwarded-For",
    "X-Request-Id",
)
# Path platforms that name one source family (a path key is issued per family).
SOURCE_FAMILY: Mapping[str, str] = {
    "mailchimp": "mailchimp",
    "custom": "custom",
    "standard_webhooks": "custom",
}


@functools.cache
def _kept_headers(audit_headers: tuple[str, ...]) -> frozenset[str]:
    """The lower-case names of the headers stored with a delivery (one set per verifier)."""
    return frozenset(h.lower() for h in (*COMMON_HEADERS, *audit_headers))


def key_hash(path_key: str) -> bytes:
    """Path keys are stored as their SHA-256: a database leak reveals no usable URL."""
    return hashlib.sha256(path_key.encode()).digest()


@dataclass(frozen=True)
class IngestPolicy:
    max_body_bytes: int
    dedupe_window_seconds: int


def dedupe_keys(
    verified: Verified, body_sha256: str, source: InboundSource | None, now: datetime, window: int
) -> tuple[str, str | None]:
    """(key, previous-window key). Platforms with an event id dedupe on it for ever;
    the others on the body's hash within a window of at least ``window`` seconds
    (the current and the previous bucket)."""
    scope = f"{source.id}:" if source is not None else ""
    if verified.platform_event_id:
        return f"{scope}id:{verified.platform_event_id}", None
    bucket = int(now.timestamp()) // window
    return f"{scope}sha256:{body_sha256}:{bucket}", f"{scope}sha256:{body_sha256}:{bucket - 1}"


class IngestService:
    def __init__(
        self,
        verifiers: Mapping[str, Verifier],
        store: WebhookStore,
        policy: IngestPolicy,
        *,
        clock: Callable[[], datetime],
        on_accepted: Callable[[], None] = lambda: None,
        handoff: Handoff | None = None,
    ) -> None:
        self._verifiers = verifiers
        self._store = store
        self._policy = policy
        self._clock = clock
        self._on_accepted = on_accepted
        # This process's processor, when it has one: accepted deliveries go to it.
        self._handoff = handoff
        self._metric_children: dict[tuple[str, Verdict], tuple[Any, Any]] = {}

    async def ingest(
        self, request: InboundRequest, *, declared_size: int = 0, truncated: bool = False
    ) -> IngestResult:
        """Decide, store and answer. Raises StoreUnavailable when nothing could be
        stored (the gateway answers 503 and the platform retries)."""
        started = time.perf_counter()
        platform = request.platform.lower()[:64]
        result = await self._decide(request, platform, declared_size, truncated)
        inbound, seconds = self._metrics(platform, result.verdict)
        inbound.inc()
        seconds.observe(time.perf_counter() - started)
        return result

    def _metrics(self, platform: str, verdict: Verdict) -> tuple[Any, Any]:
        """The metrics' children for a platform and verdict, kept (known platforms
        and verdicts only, so a bounded set) instead of looked up by label values."""
        key = (platform if platform in self._verifiers else "unknown", verdict)
        children = self._metric_children.get(key)
        if children is None:
            label = key[0]
            children = (
                metrics.INBOUND.labels(label, verdict.value),
                metrics.INGEST_SECONDS.labels(label),
            )
            self._metric_children[key] = children
        return children

    async def ingest_many(
        self, requests: Sequence[tuple[InboundRequest, int, bool]]
    ) -> list[IngestResult | Exception]:
        """``ingest`` for each of ``requests`` ((request, declared size, truncated)),
        concurrently, so their rows share group commits. One result per request, in
        order: its IngestResult, or the exception that kept it from being stored
        (StoreUnavailable, a row PostgreSQL refused, an unreachable key source); one
        request's failure does not touch the others' results."""
        results = await asyncio.gather(
            *(self.ingest(r, declared_size=size, truncated=cut) for r, size, cut in requests),
            return_exceptions=True,
        )
        out: list[IngestResult | Exception] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation and interpreter exits are not results
            out.append(result)
        return out

    async def _decide(
        self, request: InboundRequest, platform: str, declared_size: int, truncated: bool
    ) -> IngestResult:
        verifier = self._verifiers.get(platform)
        if verifier is None:
            return await self._record(
                request, platform, Rejection(Verdict.REJECTED_UNKNOWN, "unknown platform"), ()
            )
        size = max(len(request.body), declared_size)
        if truncated or size > self._policy.max_body_bytes:
            reason = f"body of {size} bytes is over the {self._policy.max_body_bytes}-byte limit"
            return await self._record(
                request,
                platform,
                Rejection(Verdict.REJECTED_TOO_LARGE, reason),
                verifier.audit_headers,
                size=size,
            )
        source: InboundSource | None = None
        family = SOURCE_FAMILY.get(platform)
        if family is not None:
            if request.path_key:
                source = await self._store.find_source(family, key_hash(request.path_key))
            if source is None:
                rejection = Rejection(Verdict.REJECTED_UNKNOWN, "unknown or missing path key")
                return await self._record(request, platform, rejection, verifier.audit_headers)
        now = self._clock()
        outcome = await verifier.verify(request, now.timestamp())
        if isinstance(outcome, Verified) and request.method != "POST":
            outcome = Rejection(Verdict.REJECTED_MALFORMED, f"{request.method} carries no event")
        return await self._record(
            request, platform, outcome, verifier.audit_headers, source=source, now=now
        )

    async def _record(
        self,
        request: InboundRequest,
        platform: str,
        outcome: Challenge | Rejection | Verified,
        audit_headers: tuple[str, ...],
        *,
        source: InboundSource | None = None,
        now: datetime | None = None,
        size: int | None = None,
    ) -> IngestResult:
        wanted = _kept_headers(audit_headers)
        headers = [(k, v) for k, v in request.headers if k.lower() in wanted]
        body_sha256 = request.body_sha256
        accepted = isinstance(outcome, Verified)
        dedupe: tuple[str | None, str | None] = (None, None)
        if isinstance(outcome, Verified):
            dedupe = dedupe_keys(
                outcome,
                body_sha256,
                source,
                now or self._clock(),
                self._policy.dedupe_window_seconds,
            )
            verdict, reason = Verdict.ACCEPTED, "verified"
        elif isinstance(outcome, Challenge):
            verdict, reason = Verdict.CHALLENGE_ANSWERED, outcome.reason
        else:
            verdict, reason = outcome.verdict, outcome.reason
        stored = StoredInbound(
            id=str(uuid.uuid4()),
            platform=platform,
            method=request.method,
            verdict=verdict,
            verdict_reason=reason,
            platform_event_id=outcome.platform_event_id if isinstance(outcome, Verified) else "",
            dedupe_key=dedupe[0],
            previous_dedupe_key=dedupe[1],
            source=source,
            headers=headers,
            # Rejections keep a hash, never the body: an attack is visible, not stored.
            body=request.body if accepted else None,
            body_sha256=body_sha256,
            body_size=size if size is not None else len(request.body),
            remote_addr=request.remote_addr,
            received_at=request.received_at,
            state=ProcessingState.PENDING if accepted else ProcessingState.SKIPPED,
            due_at=self._handoff.due_at() if accepted and self._handoff is not None else None,
        )
        event_id, inserted = await self._store.store_inbound(stored)
        if accepted and not inserted:
            return IngestResult(event_id, Verdict.DUPLICATE, "seen before", 200)
        if accepted:
            if self._handoff is not None and stored.due_at is not None:
                # Committed: what the processor would have claimed back, as it is.
                self._handoff.put(
                    PendingInbound(
                        id=event_id,
                        platform=platform,
                        body=request.body,
                        headers=headers,
                        received_at=request.received_at,
                        platform_event_id=stored.platform_event_id,
                        source=source,
                        attempts=0,
                    )
                )
            self._on_accepted()
        if isinstance(outcome, Challenge):
            return IngestResult(event_id, verdict, reason, 200, outcome.body, outcome.content_type)
        return IngestResult(event_id, verdict, reason, verdict.http_status)
