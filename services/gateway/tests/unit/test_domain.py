"""Keys, principals, roles, rollouts, redirects, fingerprints: pure functions."""

from __future__ import annotations

import uuid

import pytest

from postd_gateway.domain import (
    FeatureFlag,
    Principal,
    decide_flag,
    digest_matches,
    issue_key,
    parse_key,
    request_fingerprint,
    role_at_least,
    rollout_bucket,
    safe_return_path,
    valid_idempotency_key,
)


def test_issued_keys_parse_back_and_are_prefixed():
    issued = issue_key("production")
    assert issued.secret.startswith("postd_live_" + issued.key_id + "_")
    assert issue_key("development").secret.startswith("postd_dev_")
    parsed = parse_key(issued.secret)
    assert parsed is not None
    assert parsed[0] == issued.key_id
    assert digest_matches(issued.digest, parsed[1])
    assert issued.secret.split("_")[-1].encode() not in issued.digest


@pytest.mark.parametrize(
    "text",
    [
        "",
        "postd_live_",
        "postd_test_abcdefabcdef_" + "a" * 43,
        "postd_live_ABCDEFABCDEF_" + "a" * 43,
        "postd_live_abcdefabcdef_" + "a" * 42,
        "Bearer postd_live_abcdefabcdef_" + "a" * 43,
    ],
)
def test_malformed_keys_do_not_parse(text):
    assert parse_key(text) is None


def test_roles_are_ordered():
    assert role_at_least("owner", "admin")
    assert role_at_least("admin", "admin")
    assert not role_at_least("editor", "admin")
    assert not role_at_least("viewer", "editor")
    assert not role_at_least("root", "viewer")


def test_scopes_narrow_a_principal():
    everything = Principal("t", "admin", "api_key", "k")
    assert everything.allows_scope("posts:write")
    narrow = Principal("t", "admin", "api_key", "k", scopes=("posts:read", "connections:*"))
    assert narrow.allows_scope("posts:read")
    assert not narrow.allows_scope("posts:write")
    assert narrow.allows_scope("connections:write")
    assert Principal("t", "viewer", "jwt", "sub-1").actor == "user:sub-1"
    assert Principal("t", "viewer", "session", "k1", key_id="k1").actor == "key:k1"


def test_rollout_buckets_are_stable_and_spread():
    tenants = [str(uuid.UUID(int=i)) for i in range(4000)]
    first = [rollout_bucket("composer", "", t) for t in tenants]
    assert first == [rollout_bucket("composer", "", t) for t in tenants]
    inside = sum(1 for b in first if b < 10)
    assert 0.07 * len(tenants) < inside < 0.13 * len(tenants)
    other = [rollout_bucket("scheduler", "", t) < 10 for t in tenants]
    assert other != [b < 10 for b in first]  # different flags pick different tenants


def test_flag_stages():
    tenant = str(uuid.uuid4())

    def decide(stage, *, early=False, override=None, percent=10):
        return decide_flag(
            FeatureFlag("f", "", stage, percent, ""), tenant, early_access=early, override=override
        )

    assert decide("stable").enabled
    assert not decide("off").enabled
    assert not decide("alpha").enabled
    assert decide("alpha", early=True).enabled
    assert decide("beta", early=True).enabled
    assert decide("beta", percent=100).enabled
    assert not decide("beta", percent=0).enabled
    assert decide("off", override=True).reason == "override"
    assert not decide("stable", override=False).enabled
    expected = rollout_bucket("f", "", tenant) < 10
    assert decide("beta").enabled is expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/app/accounts?x=1", "/app/accounts?x=1"),
        ("//evil.example", "/app"),
        ("/\\evil.example", "/app"),
        ("https://evil.example", "/app"),
        ("/ok\r\nSet-Cookie: x", "/app"),
        ("", "/app"),
        (None, "/app"),
    ],
)
def test_return_paths_stay_on_this_site(given, expected):
    assert safe_return_path(given, "/app") == expected


def test_fingerprints_ignore_key_order_but_not_values():
    one = request_fingerprint("POST", "/v1/posts", {"a": 1, "b": [1, 2]})
    two = request_fingerprint("POST", "/v1/posts", {"b": [1, 2], "a": 1})
    assert one == two
    assert one != request_fingerprint("POST", "/v1/posts", {"a": 2, "b": [1, 2]})
    assert one != request_fingerprint("POST", "/v1/api-keys", {"a": 1, "b": [1, 2]})


def test_idempotency_keys():
    assert valid_idempotency_key(str(uuid.uuid4()))
    assert not valid_idempotency_key("")
    assert not valid_idempotency_key("a b")
    assert not valid_idempotency_key("x" * 256)
    assert not valid_idempotency_key("clé")
