"""Plain values the webhook router's domain works with."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Verdict(enum.Enum):
    """What the router decided about one inbound request (mirrors the proto enum)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CHALLENGE_ANSWERED = "challenge_answered"
    REJECTED_SIGNATURE = "rejected_signature"
    REJECTED_STALE = "rejected_stale"
    REJECTED_UNKNOWN = "rejected_unknown"
    REJECTED_TOO_LARGE = "rejected_too_large"
    REJECTED_MALFORMED = "rejected_malformed"
    REJECTED_CHALLENGE = "rejected_challenge"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]

    @property
    def is_rejection(self) -> bool:
        return self.value.startswith("rejected_")


_HTTP_STATUS: Mapping[Verdict, int] = {
    Verdict.ACCEPTED: 200,
    Verdict.DUPLICATE: 200,
    Verdict.CHALLENGE_ANSWERED: 200,
    Verdict.REJECTED_SIGNATURE: 401,
    Verdict.REJECTED_STALE: 401,
    Verdict.REJECTED_UNKNOWN: 404,
    Verdict.REJECTED_TOO_LARGE: 413,
    Verdict.REJECTED_MALFORMED: 400,
    Verdict.REJECTED_CHALLENGE: 403,
}


class ProcessingState(enum.Enum):
    PENDING = "pending"
    EMITTED = "emitted"
    RETRYING = "retrying"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class InboundRequest:
    """One inbound webhook exactly as the gateway received it."""

    method: str
    platform: str
    path_key: str
    body: bytes
    headers: Sequence[tuple[str, str]]
    query_string: str
    remote_addr: str
    received_at: datetime

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def body_sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True)
class Challenge:
    """A verification handshake to answer in the response body."""

    body: bytes
    content_type: str
    reason: str


@dataclass(frozen=True)
class Rejection:
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class Verified:
    """The request is authentic. ``event_id`` is the platform's own id, if it has one."""

    platform_event_id: str = ""
    # When the platform puts the content somewhere other than the raw body (Meta's
    # signed_request), the decoded content to normalise.
    decoded: Any | None = None


Outcome = Challenge | Rejection | Verified


@dataclass(frozen=True)
class InboundSource:
    """A per-tenant inbound URL key (Mailchimp path secret, a custom connector)."""

    id: str
    tenant_id: str
    connection_id: str
    platform: str


@dataclass(frozen=True)
class NormalizedItem:
    """One platform event in POSTD's words, before routing."""

    type: str
    platform: str
    external_account_id: str
    payload: Mapping[str, Any]
    occurred_at: datetime | None = None
    platform_event_id: str = ""


@dataclass(frozen=True)
class Route:
    tenant_id: str
    connection_id: str


@dataclass(frozen=True)
class StoredInbound:
    """What ingest writes for one request."""

    id: str
    platform: str
    method: str
    verdict: Verdict
    verdict_reason: str
    platform_event_id: str
    dedupe_key: str | None
    previous_dedupe_key: str | None
    source: InboundSource | None
    headers: Sequence[tuple[str, str]]
    body: bytes | None
    body_sha256: str
    body_size: int
    remote_addr: str
    received_at: datetime
    state: ProcessingState
    # A pending delivery is due for processing (claimable by any worker) from this
    # time; None: at once. Later when this process hands it to its own processor.
    due_at: datetime | None = None


@dataclass(frozen=True)
class IngestResult:
    event_id: str
    verdict: Verdict
    reason: str
    http_status: int
    body: bytes = b""
    content_type: str = ""


@dataclass
class PendingInbound:
    """A stored, accepted delivery waiting to be normalised and emitted."""

    id: str
    platform: str
    body: bytes
    headers: Sequence[tuple[str, str]]
    received_at: datetime
    platform_event_id: str
    source: InboundSource | None
    attempts: int
    replay_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
