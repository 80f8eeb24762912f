"""Platform-wide circuit breaking.

Each worker watches the outcomes of its publishes per platform over a sliding
window. When failures that look like the platform itself being down (TRANSIENT,
PLATFORM_OUTAGE) dominate the window and come from several tenants — one broken
account is not an outage — the breaker for that platform opens (state kept in
PostgreSQL, shared by every replica): the dispatcher holds that platform's jobs,
which wait rather than burn attempts. After a cool-down the dispatcher lets ONE
probe job through (half-open); its success closes the breaker, its failure re-opens
it with a doubled cool-down.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

from postd_publisher.domain.model import Category

OUTAGE_CATEGORIES = frozenset({Category.TRANSIENT, Category.PLATFORM_OUTAGE})


@dataclass(frozen=True)
class BreakerPolicy:
    window_seconds: float = 60.0
    min_failures: int = 8
    failure_ratio: float = 0.5
    min_tenants: int = 2
    cooldown_seconds: float = 30.0
    max_cooldown_seconds: float = 600.0
    probe_timeout_seconds: float = 120.0


@dataclass(frozen=True)
class _Sample:
    at: float
    tenant_id: str
    failed: bool


class OutageWatch:
    """Sliding-window error rates per platform, in one worker process."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self._samples: dict[str, deque[_Sample]] = defaultdict(deque)

    def record(self, platform: str, tenant_id: str, *, failed: bool, at: float) -> bool:
        """Add an outcome; True when the window now says the platform is down."""
        samples = self._samples[platform]
        samples.append(_Sample(at, tenant_id, failed))
        horizon = at - self.policy.window_seconds
        while samples and samples[0].at < horizon:
            samples.popleft()
        if not failed:
            return False
        failures = [s for s in samples if s.failed]
        if len(failures) < self.policy.min_failures:
            return False
        if len(failures) / len(samples) < self.policy.failure_ratio:
            return False
        return len({s.tenant_id for s in failures}) >= self.policy.min_tenants

    def reset(self, platform: str) -> None:
        self._samples.pop(platform, None)
