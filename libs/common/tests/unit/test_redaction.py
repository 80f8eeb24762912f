"""Secrets never reach a log line: not as fields, not in messages, not in tracebacks."""

import io
import json
import logging
from collections.abc import Iterator

import pytest

from postd_common.logging import configure_logging, get_logger, redact_text, register_secret
from postd_common.secrets import Secret

ACCESS = "EAAGm0PX4ZCpsBAKZCeEyJhbGciOiJIUzI1NiJ9xyz123"
REFRESH = "rt-0f9e8d7c6b5a4938-2716"
CLIENT_SECRET = "cs_7Hq2LmN9pQ4rS8tV"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
API_KEY = "postd_live_abcdefghijklmnopqrstuvwxyz012345"
SLACK = "xoxb-123456789012-123456789012-abcdefghijklmnop"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("tests", "debug", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_secret_values_never_appear_in_output(
    captured: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    register_secret(CLIENT_SECRET)
    log = get_logger("tests.redaction")
    log.info(
        "token refreshed",
        connection_id="conn-1",
        access_token=ACCESS,
        refresh_token=REFRESH,
        headers={"Authorization": f"Bearer {ACCESS}", "Accept": "application/json"},
        secret=Secret(CLIENT_SECRET),
    )
    log.warning(f"platform said: access_token={ACCESS}&refresh_token={REFRESH}")
    log.error(f"calling with Authorization: Bearer {JWT} and key {API_KEY} and {SLACK}")
    logging.getLogger("stdlib").info("client secret is %s", CLIENT_SECRET)
    logging.getLogger("stdlib").warning("body was {'access_token': '%s'}", ACCESS)
    try:
        raise ValueError(f"token exchange failed for code={REFRESH} secret {CLIENT_SECRET}")
    except ValueError:
        log.exception("refresh failed", tenant_id="t-1")

    # pytest's own capture handler sees the same redacted records.
    output = captured.getvalue() + caplog.text
    for secret in (ACCESS, REFRESH, CLIENT_SECRET, JWT, API_KEY, SLACK):
        assert secret not in output, f"leaked: {secret[:8]}..."
    records = lines(captured)
    assert len(records) == 6
    # What is not secret is still there, so the lines stay useful.
    first = records[0]
    assert first["connection_id"] == "conn-1"
    assert first["access_token"] == "[REDACTED]"
    assert first["headers"] == {"Authorization": "[REDACTED]", "Accept": "application/json"}
    assert records[5]["tenant_id"] == "t-1"
    assert "ValueError" in str(records[5]["traceback"])
    assert all(r["service"] == "tests" for r in records)


def test_secret_wrapper_masks_every_rendering() -> None:
    secret = Secret("hunter2-long-value")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert "hunter2" not in f"{secret!r}"
    assert secret.reveal() == "hunter2-long-value"
    assert secret == Secret("hunter2-long-value")


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("GET /v21.0/me?access_token=abcdef123456&fields=id", "fields=id"),
        ('{"refresh_token": "zzzzzz999999", "expires_in": 3600}', '"expires_in": 3600'),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic"),
    ],
)
def test_patterns_mask_values_but_keep_context(text: str, kept: str) -> None:
    out = redact_text(text)
    assert kept in out
    assert "[REDACTED]" in out
    for fragment in ("abcdef123456", "zzzzzz999999", "dXNlcjpwYXNzd29yZA=="):
        assert fragment not in out
