"""The post log's index by account answers as a scan of the whole log would."""

from __future__ import annotations

from postd_sandbox.state import PostLog, RecordedPost


def _post(post_id: str, account: str, at: float, platform: str = "meta") -> RecordedPost:
    return RecordedPost(
        id=post_id,
        platform=platform,
        account=account,
        kind="page_feed",
        text=f"text {post_id}",
        media=[],
        created_at=at,
        request_fields={},
    )


def test_an_accounts_posts_in_time_order_and_nobody_elses() -> None:
    log = PostLog()
    log.add(_post("a2", "A", 2.0))
    log.add(_post("b1", "B", 1.0))
    log.add(_post("a1", "A", 1.0))
    log.add(_post("x1", "A", 0.5, platform="linkedin"))
    assert [p.id for p in log.find(platform="meta", account="A")] == ["a1", "a2"]
    assert [p.id for p in log.find(platform="linkedin", account="A")] == ["x1"]
    assert [p.id for p in log.find(platform="meta")] == ["b1", "a1", "a2"]
    assert [p.id for p in log.find(account="A")] == ["x1", "a1", "a2"]
    assert log.find(platform="meta", account="C") == []


def test_a_post_added_again_replaces_the_first_in_place() -> None:
    log = PostLog()
    log.add(_post("a1", "A", 1.0))
    log.add(_post("a2", "A", 1.0))
    again = _post("a1", "A", 1.0)
    again.text = "edited"
    log.add(again)
    assert [(p.id, p.text) for p in log.find(platform="meta", account="A")] == [
        ("a1", "edited"),
        ("a2", "text a2"),
    ]
    moved = _post("a2", "B", 1.0)
    log.add(moved)
    assert [p.id for p in log.find(platform="meta", account="A")] == ["a1"]
    assert [p.id for p in log.find(platform="meta", account="B")] == ["a2"]
    assert log.get("a2") is moved


def test_filters_still_apply_within_an_account() -> None:
    log = PostLog()
    log.add(_post("a1", "A", 1.0))
    gone = log.add(_post("a2", "A", 2.0))
    gone.deleted = True
    assert [p.id for p in log.find(platform="meta", account="A", include_deleted=False)] == ["a1"]
    assert [p.id for p in log.find(platform="meta", account="A", text_contains="a2")] == ["a2"]


def test_posts_by_member_follow_adds_and_replacements() -> None:
    log = PostLog()
    first = _post("s1", "org-1", 1.0, platform="linkedin")
    first.extra["member"] = "m1"
    log.add(first)
    other = _post("s2", "org-2", 2.0, platform="linkedin")
    other.extra["member"] = "m2"
    log.add(other)
    unsigned = _post("s3", "org-1", 3.0, platform="linkedin")  # no member: not indexed
    log.add(unsigned)
    assert [p.id for p in log.by_member("linkedin", "m1")] == ["s1"]
    assert [p.id for p in log.by_member("linkedin", "m2")] == ["s2"]
    assert log.by_member("meta", "m1") == []
    # Added again under another member: it moves.
    moved = _post("s2", "org-2", 2.0, platform="linkedin")
    moved.extra["member"] = "m1"
    log.add(moved)
    assert [p.id for p in log.by_member("linkedin", "m1")] == ["s1", "s2"]
    assert log.by_member("linkedin", "m2") == []
