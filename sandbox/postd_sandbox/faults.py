"""Faults a test asks for through the control API, matched per request."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    SLOW = "slow"
    LOST_RESPONSE = "lost_response"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_REVOKED = "token_revoked"
    PERMISSION_REMOVED = "permission_removed"
    OUTAGE = "outage"
    # Answer with any entry of the platform's error table (named by `error`).
    PLATFORM_ERROR = "platform_error"


class FaultError(ValueError):
    """A fault request the sandbox cannot honour."""


@dataclass
class Fault:
    id: str
    platform: str
    account: str  # external id, or "*" for every account
    kind: FaultKind
    times: int  # remaining applications; -1 means forever
    path_contains: str | None = None
    retry_after: int | None = None
    delay_ms: int | None = None
    status: int | None = None
    error: str | None = None
    # The share of matching requests it applies to (1: every one); ``times`` counts
    # only the requests it applied to.
    probability: float = 1.0
    hits: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "platform": self.platform,
            "account": self.account,
            "kind": self.kind.value,
            "times": self.times,
            "path_contains": self.path_contains,
            "retry_after": self.retry_after,
            "delay_ms": self.delay_ms,
            "status": self.status,
            "error": self.error,
            "probability": self.probability,
            "hits": self.hits,
        }


def _opt_int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{name} must be a number")
    return int(value)


class FaultBook:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._rng = rng or random.Random()

    def add_from_json(self, payload: dict[str, Any], platforms: set[str]) -> Fault:
        platform = payload.get("platform")
        if platform not in platforms:
            raise FaultError(f"platform must be one of {sorted(platforms)}")
        try:
            kind = FaultKind(str(payload.get("kind")))
        except ValueError as exc:
            allowed = ", ".join(k.value for k in FaultKind)
            raise FaultError(f"kind must be one of: {allowed}") from exc
        account = payload.get("account", "*")
        if not isinstance(account, str) or not account:
            raise FaultError("account must be an external id or '*'")
        times = _opt_int(payload, "times")
        times = 1 if times is None else times
        if times == 0 or times < -1:
            raise FaultError("times must be a positive count or -1 (forever)")
        path_contains = payload.get("path_contains")
        if path_contains is not None and not isinstance(path_contains, str):
            raise FaultError("path_contains must be a string")
        error = payload.get("error")
        if kind is FaultKind.PLATFORM_ERROR and not isinstance(error, str):
            raise FaultError("platform_error needs `error`: a key of the platform's error table")
        if kind is FaultKind.SLOW and _opt_int(payload, "delay_ms") is None:
            raise FaultError("slow needs delay_ms")
        probability = payload.get("probability", 1.0)
        if (
            isinstance(probability, bool)
            or not isinstance(probability, int | float)
            or not 0 < probability <= 1
        ):
            raise FaultError("probability must be a number in (0, 1]")
        fault = Fault(
            id=f"fault_{next(self._ids)}",
            platform=platform,
            account=account,
            kind=kind,
            times=times,
            path_contains=path_contains,
            retry_after=_opt_int(payload, "retry_after"),
            delay_ms=_opt_int(payload, "delay_ms"),
            status=_opt_int(payload, "status"),
            error=error if isinstance(error, str) else None,
            probability=float(probability),
        )
        self._faults.append(fault)
        return fault

    def list(self) -> list[Fault]:
        return list(self._faults)

    def clear(self) -> None:
        self._faults.clear()

    def take(self, platform: str, accounts: set[str], path: str) -> Fault | None:
        """The first fault that applies to this request, counted as used."""
        for fault in self._faults:
            if fault.platform != platform:
                continue
            if fault.account != "*" and fault.account not in accounts:
                continue
            if fault.path_contains and fault.path_contains not in path:
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            fault.hits += 1
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
            return fault
        return None
