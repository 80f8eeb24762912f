"""OAuth 2.0 authorization-code bookkeeping shared by every platform.

Platform differences (parameter names, scope separators, PKCE support, partial
grants, how a denial is reported) are data in each platform's `OAuthProfile`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from postd_sandbox.clock import Clock


@dataclass(frozen=True)
class OAuthProfile:
    """How one platform's authorize and token endpoints behave."""

    authorize_path: str  # full sandbox path of the authorize endpoint
    client_id_param: str = "client_id"
    scope_separator: str = " "  # in the authorize request
    # "none": PKCE parameters are ignored; "optional": verified when sent.
    pkce: str = "optional"
    pkce_methods: tuple[str, ...] = ("S256",)
    # Accept a hex SHA-256 challenge as well as base64url (TikTok desktop does this).
    pkce_hex_ok: bool = False
    partial_grants: bool = True
    code_ttl: float = 600.0
    scopes: Mapping[str, str] = field(default_factory=dict)  # scope -> description
    default_scopes: tuple[str, ...] = ()
    # Redirect query parameters when the person denies consent.
    deny_params: Mapping[str, str] = field(
        default_factory=lambda: {"error": "access_denied", "error_description": "User denied"}
    )
    # Redirect error for unknown scopes; None shows an error page instead.
    invalid_scope_error: str | None = None
    requires_response_type: bool = True
    display_name: str = ""
    code_prefix: str = ""


@dataclass
class PendingAuthorization:
    id: str
    platform: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    created_at: float
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class AuthorizationCode:
    code: str
    request: PendingAuthorization
    subject: str
    granted_scopes: tuple[str, ...]
    issued_at: float
    used: bool = False
    grant: str = ""


@dataclass
class ConsentDirective:
    """What the next authorization on a platform does (set by tests)."""

    platform: str
    account: str | None = None
    scopes: tuple[str, ...] | None = None
    deny: bool = False
    remaining: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "account": self.account,
            "scopes": list(self.scopes) if self.scopes is not None else None,
            "deny": self.deny,
            "remaining": self.remaining,
        }


class CodeProblem(Exception):
    """Why an authorization code cannot be exchanged (rendered per platform)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Reasons a code exchange fails; each platform maps them to its own error body.
CODE_UNKNOWN = "code_unknown"
CODE_USED = "code_used"
CODE_EXPIRED = "code_expired"
CODE_CLIENT_MISMATCH = "client_mismatch"
CODE_REDIRECT_MISMATCH = "redirect_mismatch"
CODE_PKCE_MISSING = "pkce_missing"
CODE_PKCE_MISMATCH = "pkce_mismatch"


def pkce_s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pkce_matches(
    challenge: str, method: str | None, verifier: str, *, hex_ok: bool = False
) -> bool:
    if method in (None, "", "plain"):
        return hmac.compare_digest(challenge, verifier)
    if hmac.compare_digest(challenge, pkce_s256(verifier)):
        return True
    if hex_ok:
        hexed = hashlib.sha256(verifier.encode()).hexdigest()
        return hmac.compare_digest(challenge.lower(), hexed)
    return False


class OAuthBook:
    """Pending authorizations, issued codes, consent directives, past grants."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.pending: dict[str, PendingAuthorization] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.directives: dict[str, deque[ConsentDirective]] = {}
        # (platform, client_id, subject) -> scopes granted before; Google only hands
        # out a refresh token on first consent unless prompt=consent.
        self.grants: dict[tuple[str, str, str], set[str]] = {}

    def remember(self, pending: PendingAuthorization) -> None:
        self.pending[pending.id] = pending

    def pop_pending(self, pending_id: str) -> PendingAuthorization | None:
        return self.pending.pop(pending_id, None)

    def add_directive(self, directive: ConsentDirective) -> None:
        self.directives.setdefault(directive.platform, deque()).append(directive)

    def next_directive(self, platform: str) -> ConsentDirective | None:
        queue = self.directives.get(platform)
        if not queue:
            return None
        directive = queue[0]
        directive.remaining -= 1
        if directive.remaining <= 0:
            queue.popleft()
        return directive

    def issue_code(
        self,
        pending: PendingAuthorization,
        subject: str,
        granted: tuple[str, ...],
        prefix: str = "",
    ) -> AuthorizationCode:
        code = AuthorizationCode(
            code=prefix + secrets.token_urlsafe(24),
            request=pending,
            subject=subject,
            granted_scopes=granted,
            issued_at=self._clock.now(),
            grant=secrets.token_hex(8),
        )
        self.codes[code.code] = code
        return code

    def redeem(
        self,
        code_value: str | None,
        *,
        profile: OAuthProfile,
        client_id: str | None,
        redirect_uri: str | None,
        code_verifier: str | None,
        require_redirect: bool = True,
    ) -> AuthorizationCode:
        """Check a code against the token request and mark it used.

        Raises CodeProblem with one of the CODE_* reasons.
        """
        code = self.codes.get(code_value or "")
        if code is None:
            raise CodeProblem(CODE_UNKNOWN)
        if code.used:
            raise CodeProblem(CODE_USED)
        if self._clock.now() - code.issued_at > profile.code_ttl:
            raise CodeProblem(CODE_EXPIRED)
        if client_id != code.request.client_id:
            raise CodeProblem(CODE_CLIENT_MISMATCH)
        if (require_redirect or redirect_uri is not None) and (
            redirect_uri != code.request.redirect_uri
        ):
            raise CodeProblem(CODE_REDIRECT_MISMATCH)
        if code.request.code_challenge and profile.pkce != "none":
            if not code_verifier:
                raise CodeProblem(CODE_PKCE_MISSING)
            if not pkce_matches(
                code.request.code_challenge,
                code.request.code_challenge_method,
                code_verifier,
                hex_ok=profile.pkce_hex_ok,
            ):
                raise CodeProblem(CODE_PKCE_MISMATCH)
        code.used = True
        return code
