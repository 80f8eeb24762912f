"""Alerts: one incident, one FIRING, then one RESOLVED.

Detectors call :meth:`AlertEngine.fire` as often as they see a problem; the store
keeps one open incident per dedupe key in PostgreSQL, so repeats are no news. The
FIRING and RESOLVED messages go to the ``alerts`` topic through an outbox written in
the same transaction; health's own notifier consumes that topic like any other
consumer (the webhook router's alerts arrive the same way).
"""

from __future__ import annotations

from collections.abc import Callable

from postd_common.logging import get_logger
from postd_health.domain.model import Alert, AlertKind, AlertSpec, Severity
from postd_health.ports import AlertStore, Clock

log = get_logger(__name__)


def connection_key(connection_id: str) -> str:
    return f"connection_attention:{connection_id}"


def expiring_key(connection_id: str) -> str:
    return f"token_expiring:{connection_id}"


def refresh_failed_key(connection_id: str) -> str:
    return f"token_refresh_failed:{connection_id}"


def error_rate_key(tenant_id: str, platform: str) -> str:
    return f"api_error_rate:{tenant_id}:{platform}"


def outage_key(platform: str) -> str:
    return f"platform_outage:{platform}"


QUEUE_BACKLOG_KEY = "queue_backlog"


class AlertEngine:
    def __init__(
        self,
        store: AlertStore,
        *,
        topic: str,
        clock: Clock,
        on_outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._topic = topic
        self._clock = clock
        self._on_outbox = on_outbox

    async def fire(self, spec: AlertSpec) -> Alert | None:
        """Open (or escalate) the incident; None when it is already open as serious."""
        alert = await self._store.open_alert(spec, self._clock(), self._topic)
        if alert is not None:
            log.info(
                "alert firing",
                dedupe_key=spec.dedupe_key,
                kind=spec.kind.value,
                severity=spec.severity.name,
                tenant_id=spec.tenant_id,
            )
            self._on_outbox()
        return alert

    async def resolve(self, dedupe_key: str, message: str, action_url: str = "") -> Alert | None:
        """Resolve the open incident, if any, with a message saying what changed."""
        alert = await self._store.resolve_alert(
            dedupe_key, message, self._clock(), self._topic, action_url=action_url
        )
        if alert is not None:
            log.info("alert resolved", dedupe_key=dedupe_key, tenant_id=alert.tenant_id)
            self._on_outbox()
        return alert

    async def resolve_open(self, kind: AlertKind, prefix: str, keep: set[str], message: str) -> int:
        """Resolve open incidents of ``kind`` under ``prefix`` whose keys are not in
        ``keep`` (a detector's way of saying "these are over")."""
        resolved = 0
        for alert in await self._store.open_alerts(kind, prefix):
            if alert.dedupe_key not in keep and await self.resolve(alert.dedupe_key, message):
                resolved += 1
        return resolved


def severity_for_stage(index: int, stages: int) -> Severity:
    """The first of several warnings informs, the middle ones warn, the last is critical."""
    if stages <= 1 or index == stages - 1:
        return Severity.CRITICAL if stages > 1 else Severity.WARNING
    return Severity.INFO if index == 0 else Severity.WARNING
