"""Analytics collection through the publishing machinery, at a lower priority.

The dispatcher serves due publish jobs first; only with room left in its batch does
it call :meth:`AnalyticsDispatch.dispatch_once`, which claims due collection tasks
(``FOR UPDATE SKIP LOCKED``, of connections not paused or blocked, of platforms not
held by an open breaker), groups them per connection into rounds, charges each round
to the account's quota ledger under analytics' share (rounds over it are deferred,
never the publish jobs), commits and sends the rounds to ``analytics.jobs``. A lost
round's lease passes and the reconciler puts its tasks back.

The :class:`AnalyticsCollector` handles one round: it claims the tasks by the round's
token (a duplicate delivery claims nothing), asks connectors for the figures, and
records snapshots, rollups and each task's next step in one transaction. Failures
back off and retry; a round that keeps failing is dead-lettered (its message goes to
the dead-letter topic) and the task moves on to its next scheduled snapshot.
Collection is idempotent per round token: a re-delivered round finds nothing to
claim, and a lost one is collected again from scratch (a snapshot is a reading, so
taking one twice changes no total).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from postd.common.v1.common_pb2 import PlatformError
from postd_common.logging import get_logger
from postd_publisher.domain.analytics import (
    ACCOUNT,
    POST,
    AnalyticsShare,
    CollectionDemand,
    CollectionSchedule,
    max_posts_per_round,
    plan_collections,
    round_cost,
)
from postd_publisher.domain.model import Category
from postd_publisher.domain.quota import ANALYTICS, QuotaBook, UsageKey
from postd_publisher.ports import (
    AnalyticsQueue,
    AnalyticsSource,
    AnalyticsStore,
    CollectionClaim,
    CollectionClaimRequest,
    CollectionResult,
    CollectionRound,
    CollectionTask,
    ConnectionGone,
    ConnectorsUnavailable,
    QueueUnavailable,
)

log = get_logger(__name__)
Clock = Callable[[], datetime]

# The platform cannot report it: collecting again will not help.
STOPPING = frozenset({Category.NOT_FOUND, Category.INVALID_REQUEST, Category.CONTENT_REJECTED})
# A person must reconnect: wait long (the connection is paused meanwhile).
HOLDING = frozenset({Category.AUTH_REVOKED, Category.PERMISSION_MISSING})
HOLD_FOR = timedelta(hours=6)


@dataclass(frozen=True)
class CollectionSettings:
    schedule: CollectionSchedule = field(default_factory=CollectionSchedule)
    share: AnalyticsShare = field(default_factory=AnalyticsShare)
    # How long a dispatched or collecting round is ours before the reconciler takes it
    # back.
    lease_seconds: float = 300.0
    # Failed tries of one snapshot before its round is dead-lettered.
    max_attempts: int = 4
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    # Tasks claimed per dispatch round at most (publish jobs come first).
    batch_size: int = 500


# --------------------------------------------------------------------------- dispatch


class AnalyticsDispatch:
    """Claims due collection tasks into rounds, admits them under analytics' share of
    each account's call budgets, and sends them. Called by the dispatcher with the
    room its publish jobs left."""

    def __init__(
        self,
        store: AnalyticsStore,
        queue: AnalyticsQueue,
        *,
        quotas: QuotaBook,
        settings: CollectionSettings,
    ) -> None:
        self._store = store
        self._queue = queue
        self._quotas = quotas
        self._settings = settings

    async def dispatch_once(
        self, now: datetime, room: int, held_platforms: frozenset[str] = frozenset()
    ) -> int:
        """One claim-and-send round of at most ``room`` tasks; returns tasks sent."""
        limit = min(room, self._settings.batch_size)
        if limit <= 0:
            return 0
        sizes = {
            platform: max_posts_per_round(platform, self._quotas, self._settings.share)
            for platform in self._quotas.platforms
        }
        request = CollectionClaimRequest(
            now=now,
            limit=limit,
            lease_seconds=self._settings.lease_seconds,
            held_platforms=held_platforms,
            round_sizes=sizes,
        )
        async with self._store.claim_due(request) as claim:
            rounds = list(claim.rounds)
            admitted = await self._admit(claim, rounds, now) if rounds else set()
        sending = [r for r in rounds if r.round_id in admitted]
        if not sending:
            return 0
        try:
            await self._queue.send(sending)
        except QueueUnavailable:
            await self._store.release(
                sending, "The message broker did not take the collection; it will go again.", now
            )
            raise
        return sum(len(r.task_ids) for r in sending)

    async def _admit(
        self, claim: CollectionClaim, rounds: list[CollectionRound], now: datetime
    ) -> set[str]:
        demands = [
            CollectionDemand(
                r.round_id,
                r.tenant_id,
                r.connection_id,
                r.platform,
                round_cost(r.platform, r.kind, len(r.task_ids)),
            )
            for r in rounds
            if self._quotas.spent_by(r.platform, ANALYTICS)
        ]
        if not demands:
            return {r.round_id for r in rounds}
        keys: set[UsageKey] = {
            (d.tenant_id, d.connection_id, rule.name)
            for d in demands
            for rule in self._quotas.spent_by(d.platform, ANALYTICS)
        }
        used = await claim.quota_usage(sorted(keys), now - self._quotas.longest_window())
        plan = plan_collections(demands, used, self._quotas, self._settings.share, now)
        if plan.deferred:
            await claim.defer(plan.deferred)
            for deferral in plan.deferred:
                log.info("analytics backs off", round_id=deferral.job_id, until=str(deferral.until))
        if plan.entries:
            await claim.spend(plan.entries, now)
        deferred = {d.job_id for d in plan.deferred}
        return {r.round_id for r in rounds if r.round_id not in deferred}


# --------------------------------------------------------------------------- collect


@dataclass(frozen=True)
class RoundDelivery:
    """An ``analytics.jobs`` message, as the collector needs it."""

    tenant_id: str
    connection_id: str
    kind: str
    task_ids: Sequence[str]
    round_id: str


class AnalyticsCollector:
    def __init__(
        self,
        store: AnalyticsStore,
        source: AnalyticsSource,
        *,
        settings: CollectionSettings,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._source = source
        self._settings = settings
        self._now = clock
        self._rng = rng or random.Random()

    async def handle(self, delivery: RoundDelivery) -> None:
        tasks = await self._store.claim_round(
            delivery.tenant_id,
            delivery.task_ids,
            delivery.round_id,
            self._now(),
            self._settings.lease_seconds,
        )
        if not tasks:
            return
        if delivery.kind == ACCOUNT:
            results = [await self.collect_account(tasks[0])]
        else:
            results = list(await self.collect_posts(tasks))
        await self._store.record(results, self._now())

    async def collect_posts(self, tasks: Sequence[CollectionTask]) -> Sequence[CollectionResult]:
        first = tasks[0]
        try:
            replies = await self._source.post_figures(
                first.tenant_id, first.connection_id, [t.platform_post_id for t in tasks]
            )
        except ConnectionGone:
            return [self._stopped(t, "The connection no longer exists.") for t in tasks]
        except ConnectorsUnavailable as exc:
            return [self._failed(t, _error(first.platform, str(exc))) for t in tasks]
        by_id = {r.platform_post_id: r for r in replies}
        now = self._now()
        results = []
        for task in tasks:
            reply = by_id.get(task.platform_post_id)
            if reply is None:
                results.append(self._failed(task, _error(task.platform, "no answer for the post")))
            elif reply.error is not None or reply.figures is None:
                results.append(self._failed(task, reply.error or _error(task.platform, "")))
            else:
                assert task.published_at is not None
                after = self._settings.schedule.next_post_run(task.published_at, now)
                results.append(
                    CollectionResult(
                        task=task,
                        state="SCHEDULED" if after is not None else "DONE",
                        run_at=after or now,
                        reason=""
                        if after is not None
                        else "Old enough: its figures have settled; no more snapshots.",
                        figures=reply.figures,
                    )
                )
        return results

    async def collect_account(self, task: CollectionTask) -> CollectionResult:
        now = self._now()
        schedule = self._settings.schedule
        back = (
            schedule.account_backfill_days
            if task.collections == 0
            else schedule.account_reread_days
        )
        until = now.date()
        since = until - timedelta(days=back - 1)
        try:
            reply = await self._source.account_figures(
                task.tenant_id, task.connection_id, since, until
            )
        except ConnectionGone:
            return self._stopped(task, "The connection no longer exists.")
        except ConnectorsUnavailable as exc:
            return self._failed(task, _error(task.platform, str(exc)))
        if reply.error is not None:
            return self._failed(task, reply.error)
        return CollectionResult(
            task=task,
            state="SCHEDULED",
            run_at=now + schedule.account_every,
            account_days=reply.days,
            totals=reply.totals,
        )

    # ------------------------------------------------------------------ outcomes

    def _stopped(self, task: CollectionTask, reason: str) -> CollectionResult:
        return CollectionResult(
            task=task, state="STOPPED", run_at=self._now(), reason=reason, category="NOT_FOUND"
        )

    def _failed(self, task: CollectionTask, error: PlatformError) -> CollectionResult:
        now = self._now()
        category = Category.of(error)
        words = error.message or category.value.replace("_", " ").lower()
        if category in STOPPING:
            return CollectionResult(
                task=task,
                state="STOPPED",
                run_at=now,
                reason=f"Not collected: {words}",
                category=category.value,
            )
        if category in HOLDING:
            return CollectionResult(
                task=task,
                state="RETRYING",
                run_at=now + HOLD_FOR,
                reason=f"Waiting for a reconnect: {words}",
                category=category.value,
                attempts=task.attempts,
            )
        attempts = task.attempts + 1
        if attempts >= self._settings.max_attempts:
            return self._dead_letter(task, category, words, attempts, now)
        delay = min(
            self._settings.retry_max_seconds,
            self._settings.retry_base_seconds * 2 ** (attempts - 1),
        )
        delay = delay / 2 + self._rng.uniform(0, delay / 2)
        if error.HasField("retry_after"):
            delay = max(delay, error.retry_after.ToTimedelta().total_seconds())
        at = now + timedelta(seconds=delay)
        return CollectionResult(
            task=task,
            state="RETRYING",
            run_at=at,
            reason=f"Retrying at {at:%H:%M:%S} UTC: {words}",
            category=category.value,
            attempts=attempts,
        )

    def _dead_letter(
        self, task: CollectionTask, category: Category, words: str, attempts: int, now: datetime
    ) -> CollectionResult:
        reason = f"Gave up on this snapshot after {attempts} tries: {words}"
        schedule = self._settings.schedule
        if task.kind == POST:
            assert task.published_at is not None
            after = schedule.next_post_run(task.published_at, now)
        else:
            after = now + schedule.account_every
        return CollectionResult(
            task=task,
            state="SCHEDULED" if after is not None else "DONE",
            run_at=after or now,
            reason=reason + ("; the next one is on schedule." if after else "."),
            category=category.value,
            attempts=0,
            dead_letter_reason=reason,
        )


def _error(platform: str, message: str) -> PlatformError:
    return PlatformError(
        category=Category.TRANSIENT.proto(),
        platform=platform,
        message=message or "the figures could not be read",
    )


def new_round_id() -> str:
    return str(uuid.uuid4())
