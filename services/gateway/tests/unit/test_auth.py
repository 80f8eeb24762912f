"""The authenticator on fakes of its ports: the revocation bound of the credential
cache, batched last-used stamps, CSRF."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from postd_gateway.adapters.postgres import ApiKeyRecord, SessionRecord, TenantRecord
from postd_gateway.auth import Authentication, Authenticator, check_csrf
from postd_gateway.domain import Principal, issue_key, sha256
from postd_gateway.problems import Problem


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Keys:
    def __init__(self) -> None:
        self.records: dict[str, ApiKeyRecord] = {}
        self.lookups = 0
        self.touched: list[dict] = []

    async def find_key(self, key_id):
        self.lookups += 1
        return self.records.get(key_id)

    async def get_tenant(self, tenant_id):
        return TenantRecord(tenant_id, "t", "T", None, False)

    async def touch_keys(self, used):
        self.touched.append(dict(used))


class Sessions:
    def __init__(self) -> None:
        self.records: dict[bytes, SessionRecord] = {}

    async def find_live(self, token_sha256):
        return self.records.get(token_sha256)


@pytest.fixture
def parts():
    clock, keys, sessions = Clock(), Keys(), Sessions()
    issued = issue_key("test")
    keys.records[issued.key_id] = ApiKeyRecord(
        issued.key_id, "tenant-1", "k", "editor", (), issued.digest, None
    )
    auth = Authenticator(keys, sessions, None, cache_seconds=5.0, clock=clock)
    return clock, keys, sessions, issued, auth


async def test_a_revoked_key_works_at_most_cache_seconds_more(parts):
    clock, keys, _, issued, auth = parts
    assert (await auth.api_key(issued.secret)).role == "editor"
    record = keys.records[issued.key_id]
    keys.records[issued.key_id] = replace(record, revoked_at=datetime.now(UTC))  # another replica
    clock.now += 4.9
    assert (await auth.api_key(issued.secret)).tenant_id == "tenant-1"  # still cached
    clock.now += 0.2
    with pytest.raises(Problem) as refused:
        await auth.api_key(issued.secret)
    assert refused.value.status == 401


async def test_forgetting_a_key_takes_effect_at_once(parts):
    _, keys, _, issued, auth = parts
    await auth.api_key(issued.secret)
    keys.records[issued.key_id] = replace(keys.records[issued.key_id], revoked_at=datetime.now(UTC))
    auth.forget_key(issued.key_id)
    with pytest.raises(Problem):
        await auth.api_key(issued.secret)


async def test_lookups_are_cached_and_a_wrong_secret_never_passes(parts):
    _, keys, _, issued, auth = parts
    for _ in range(5):
        await auth.api_key(issued.secret)
    assert keys.lookups == 1
    forged = issued.secret[:-3] + ("aaa" if not issued.secret.endswith("aaa") else "bbb")
    with pytest.raises(Problem):
        await auth.api_key(forged)


async def test_last_used_is_written_in_one_batch(parts):
    _, keys, _, issued, auth = parts
    for _ in range(3):
        await auth.api_key(issued.secret)
    await auth.flush_last_used()
    assert len(keys.touched) == 1
    assert list(keys.touched[0]) == [issued.key_id]
    await auth.flush_last_used()
    assert keys.touched[-1] == {}


async def test_sessions_end_with_their_key(parts):
    _, keys, sessions, issued, auth = parts
    sessions.records[sha256("cookie")] = SessionRecord(
        "s1",
        "tenant-1",
        "editor",
        issued.key_id,
        issued.key_id,
        (),
        sha256("csrf"),
        datetime.now(UTC) + timedelta(hours=1),
    )
    principal, _csrf = await auth.session("cookie")
    assert principal.session_id == "s1"
    keys.records[issued.key_id] = replace(keys.records[issued.key_id], revoked_at=datetime.now(UTC))
    auth.forget_key(issued.key_id)
    with pytest.raises(Problem):
        await auth.session("cookie")


def test_csrf_is_required_only_for_cookie_credentials():
    principal = Principal("t", "editor", "session", "k")
    check_csrf(Authentication(principal, None), None)  # bearer: nothing to check
    cookie = Authentication(principal, sha256("right"))
    check_csrf(cookie, "right")
    for presented in (None, "", "wrong"):
        with pytest.raises(Problem) as refused:
            check_csrf(cookie, presented)
        assert refused.value.code == "csrf_failed"


async def test_authorization_header_shapes(parts):
    _, _, _, issued, auth = parts
    assert (await auth.authenticate(f"Bearer {issued.secret}", None)).csrf_sha256 is None
    assert (await auth.authenticate(f"bearer   {issued.secret}", None)).principal.role == "editor"
    for header in ("Basic abc", "Bearer", "Token x"):
        with pytest.raises(Problem):
            await auth.authenticate(header, None)
    with pytest.raises(Problem) as jwt_off:
        await auth.authenticate("Bearer eyJhbGciOi.x.y", None)
    assert "API key" in jwt_off.value.detail
