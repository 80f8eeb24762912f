"""What the sandbox remembers: tokens, recorded posts, uploads, and its clock.

One `SandboxState` lives in the app (under `STATE_KEY`); nothing here is module-level.
Platform-specific records (pages, members, locations, ...) live in each platform's
own directory object, kept in `SandboxState.directories`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from postd_sandbox.clock import Clock, IdSource
from postd_sandbox.config import SandboxSettings
from postd_sandbox.faults import FaultBook
from postd_sandbox.oauth import OAuthBook
from postd_sandbox.signing import generate_rsa_key

T = TypeVar("T")


@dataclass
class TokenRecord:
    """An access or refresh token the sandbox issued."""

    value: str
    platform: str
    kind: str  # "access" | "refresh" | "page"
    subject: str  # who logged in (user id, member id, open_id, ...)
    account: str  # what the token acts for (a page id for page tokens; else subject)
    scopes: tuple[str, ...]
    client_id: str
    issued_at: float
    expires_at: float | None
    grant: str  # id shared by the tokens of one authorization
    revoked: bool = False
    # A rotated refresh token was replaced by a newer one; using it again is refused.
    rotated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def status(self, now: float) -> str:
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "valid"

    def expires_in(self, now: float) -> int:
        if self.expires_at is None:
            return 0
        return max(0, int(self.expires_at - now))


class TokenStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tokens: dict[str, TokenRecord] = {}

    def issue(
        self,
        *,
        platform: str,
        kind: str,
        subject: str,
        scopes: Iterable[str],
        client_id: str,
        lifetime: float | None,
        grant: str,
        account: str | None = None,
        prefix: str = "",
        nbytes: int = 32,
        value: str | None = None,
        expires_at: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> TokenRecord:
        now = self._clock.now()
        token = value or prefix + secrets.token_urlsafe(nbytes)
        if expires_at is None and lifetime is not None:
            expires_at = now + lifetime
        record = TokenRecord(
            value=token,
            platform=platform,
            kind=kind,
            subject=subject,
            account=account or subject,
            scopes=tuple(scopes),
            client_id=client_id,
            issued_at=now,
            expires_at=expires_at,
            grant=grant,
            extra=dict(extra or {}),
        )
        self._tokens[token] = record
        return record

    def get(self, value: str | None) -> TokenRecord | None:
        if not value:
            return None
        return self._tokens.get(value)

    def all(self) -> Iterator[TokenRecord]:
        return iter(list(self._tokens.values()))

    def matching(
        self,
        platform: str,
        *,
        account: str | None = None,
        value: str | None = None,
    ) -> list[TokenRecord]:
        found = []
        for record in self._tokens.values():
            if record.platform != platform:
                continue
            if value is not None and record.value != value:
                continue
            if account is not None and account not in (record.account, record.subject):
                continue
            found.append(record)
        return found

    def expire(self, records: Iterable[TokenRecord]) -> int:
        now = self._clock.now()
        count = 0
        for record in records:
            record.expires_at = now - 1
            count += 1
        return count

    def revoke(self, records: Iterable[TokenRecord]) -> int:
        count = 0
        for record in records:
            record.revoked = True
            count += 1
        return count

    def revoke_grant(self, grant: str) -> None:
        for record in self._tokens.values():
            if record.grant == grant:
                record.revoked = True


@dataclass
class RecordedPost:
    """Something a client created on a platform, as the sandbox saw it."""

    id: str
    platform: str
    account: str
    kind: str  # "page_feed", "ig_media", "linkedin_post", ...
    text: str
    media: list[str]
    created_at: float
    request_fields: dict[str, Any]
    status: str = "published"
    deleted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "platform": self.platform,
            "account": self.account,
            "kind": self.kind,
            "text": self.text,
            "media": list(self.media),
            "created_at": self.created_at,
            "status": self.status,
            "deleted": self.deleted,
            "request_fields": dict(self.request_fields),
        }


def _member_key(post: RecordedPost | None) -> tuple[str, str] | None:
    member = post.extra.get("member") if post is not None else None
    return (post.platform, str(member)) if post is not None and member else None


class PostLog:
    def __init__(self) -> None:
        self._posts: dict[str, RecordedPost] = {}
        # Posts by (platform, account), in the order added: a lookup of one account's
        # posts (the duplicate check on every Page post) costs the same with 10 posts
        # in the log as with 100,000.
        self._by_account: dict[tuple[str, str], list[RecordedPost]] = {}
        # Posts by (platform, the person who posted: extra["member"]), for per-person
        # limits (LinkedIn's posts per member per day) without a scan of the log.
        self._by_member: dict[tuple[str, str], list[RecordedPost]] = {}

    def add(self, post: RecordedPost) -> RecordedPost:
        previous = self._posts.get(post.id)
        self._posts[post.id] = post
        old_account = (previous.platform, previous.account) if previous is not None else None
        self._index(self._by_account, old_account, (post.platform, post.account), previous, post)
        self._index(self._by_member, _member_key(previous), _member_key(post), previous, post)
        return post

    @staticmethod
    def _index(
        index: dict[tuple[str, str], list[RecordedPost]],
        old_key: tuple[str, str] | None,
        new_key: tuple[str, str] | None,
        previous: RecordedPost | None,
        post: RecordedPost,
    ) -> None:
        """Keep ``index`` in step: a replaced post keeps its place (as in ``_posts``)."""
        if previous is not None and old_key is not None:
            same = index[old_key]
            if old_key == new_key:
                same[same.index(previous)] = post
                return
            same.remove(previous)
        if new_key is not None:
            index.setdefault(new_key, []).append(post)

    def by_member(self, platform: str, member: str) -> list[RecordedPost]:
        """The posts ``member`` made on ``platform``, in the order added."""
        return list(self._by_member.get((platform, member), []))

    def get(self, post_id: str) -> RecordedPost | None:
        return self._posts.get(post_id)

    def find(
        self,
        *,
        platform: str | None = None,
        account: str | None = None,
        text_contains: str | None = None,
        include_deleted: bool = True,
    ) -> list[RecordedPost]:
        found = []
        candidates = (
            self._by_account.get((platform, account), [])
            if platform and account
            else self._posts.values()
        )
        for post in candidates:
            if platform and post.platform != platform:
                continue
            if account and post.account != account:
                continue
            if text_contains and text_contains not in post.text:
                continue
            if not include_deleted and post.deleted:
                continue
            found.append(post)
        return sorted(found, key=lambda p: p.created_at)


@dataclass
class Upload:
    """Bytes a client uploaded for a later post (TikTok chunks, LinkedIn images)."""

    id: str
    platform: str
    account: str
    expected_size: int | None
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False
    content_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "platform": self.platform,
            "account": self.account,
            "size": len(self.data),
            "expected_size": self.expected_size,
            "complete": self.complete,
            "sha256": hashlib.sha256(bytes(self.data)).hexdigest(),
            "content_type": self.content_type,
        }


class SandboxState:
    """Everything the sandbox remembers between requests."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.clock = Clock()
        self.ids = IdSource()
        self.tokens = TokenStore(self.clock)
        self.posts = PostLog()
        self.uploads: dict[str, Upload] = {}
        self.directories: dict[str, object] = {}
        self.faults = FaultBook()
        self.oauth = OAuthBook(self.clock)
        # Per-platform scratch space for endpoint bookkeeping (rate windows, ...).
        self.counters: dict[str, list[float]] = {}
        # Signs OIDC ID tokens and Pub/Sub push tokens; survives reset so clients'
        # JWKS caches stay valid.
        self.signing_key = generate_rsa_key()
        self.signing_kid = "sandbox-" + secrets.token_hex(8)

    def directory(self, platform: str, kind: type[T]) -> T:
        found = self.directories[platform]
        if not isinstance(found, kind):
            raise TypeError(f"directory of {platform} is not a {kind.__name__}")
        return found

    def reset(self) -> None:
        self.clock = Clock()
        self.ids = IdSource()
        self.tokens = TokenStore(self.clock)
        self.posts = PostLog()
        self.uploads = {}
        self.directories = {}
        self.faults = FaultBook()
        self.oauth = OAuthBook(self.clock)
        self.counters = {}

    def public_url(self, path: str) -> str:
        return self.settings.public_url + path
