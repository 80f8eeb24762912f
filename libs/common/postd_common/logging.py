"""Structured JSON logging with secret redaction built in.

Every log line is one JSON object on stderr. Redaction happens in the formatter,
after the message is rendered, so nothing a caller does (f-strings, ``%`` args,
structured fields, exception text) can carry a token past it:

* fields whose *name* looks sensitive (token, secret, password, authorization,
  cookie, api key, code verifier, ...) are replaced wholesale;
* values that *look* like credentials (bearer headers, ``access_token=`` pairs,
  JWTs, Meta/Slack/Standard-Webhooks/POSTD key shapes) are masked wherever they
  appear in text;
* values registered with :func:`register_secret` (configured client secrets,
  keys) are masked by exact match.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from postd_common.secrets import Secret

REDACTED: Final = "[REDACTED]"

_SENSITIVE_KEY = re.compile(
    r"(?i)(pass(word)?|secret|token|authorization|cookie|api[-_]?key|credential|"
    r"private[-_]?key|code[-_]?verifier|signature|session|dek|plaintext|^code$)"
)
# Keys whose names contain a sensitive word but hold no secret.
_SAFE_KEYS: Final = frozenset({"token_type", "token_expires_at", "tokens_expiring", "key_version"})

_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + REDACTED),
    (
        re.compile(
            r"(?i)((?:access_token|refresh_token|id_token|client_secret|code_verifier|"
            r"fb_exchange_token|password|api_key|apikey|secret|token|code)"
            r"[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;}]+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"\bEAA[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{10,}"), REDACTED),
    (re.compile(r"\bpostd_(?:live|test|dev)_[A-Za-z0-9_]{16,}"), REDACTED),
)

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | Secret | None) -> None:
    """Mask this exact value wherever it appears in a log line from now on."""
    raw = value.reveal() if isinstance(value, Secret) else value
    if raw and len(raw) >= 6:
        with _registered_lock:
            _registered.add(raw)


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    if _registered:
        with _registered_lock:
            known = sorted(_registered, key=len, reverse=True)
        for value in known:
            if value in text:
                text = text.replace(value, REDACTED)
    return text


def is_sensitive_key(key: str) -> bool:
    return key.lower() not in _SAFE_KEYS and bool(_SENSITIVE_KEY.search(key))


def redact(value: Any, key: str | None = None, _depth: int = 0) -> Any:
    """Return a JSON-safe copy of ``value`` with secrets removed."""
    if key is not None and is_sensitive_key(key):
        return REDACTED
    if _depth > 8:
        return "..."
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, None, _depth + 1) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return redact_text(str(value))


_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "postd_fields",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one redacted JSON line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact_text(message),
        }
        trace_id, span_id = _current_trace_ids()
        if trace_id:
            entry["trace_id"] = trace_id
            entry["span_id"] = span_id
        fields = getattr(record, "postd_fields", None)
        if isinstance(fields, Mapping):
            for k, v in fields.items():
                entry[k] = redact(v, k)
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                entry[k] = redact(v, k)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
            entry["traceback"] = redact_text("".join(traceback.format_exception(*record.exc_info)))
        return json.dumps(entry, default=str, ensure_ascii=False)


def _current_trace_ids() -> tuple[str | None, str | None]:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry is a locked dependency
        return None, None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


class Logger:
    """A thin structured facade over a stdlib logger: ``log.info("msg", job_id=...)``."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, msg: str, exc_info: bool, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level, msg, exc_info=exc_info, extra={"postd_fields": fields}, stacklevel=3
            )

    def debug(self, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, False, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, msg, False, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, msg, False, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._log(logging.ERROR, msg, False, fields)

    def exception(self, msg: str, **fields: Any) -> None:
        self._log(logging.ERROR, msg, True, fields)

    def is_enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)


def get_logger(name: str) -> Logger:
    return Logger(logging.getLogger(name))


LEVELS: Final = ("debug", "info", "warning", "error")


_base_factory = logging.getLogRecordFactory()


def _redacting_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Redact at the source, so every handler (ours, pytest's, a library's) sees
    only the masked message, fields and traceback."""
    record = _base_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = str(record.msg)
    record.msg = redact_text(message)
    record.args = ()
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)))
    return record


def install_redaction() -> None:
    """Make every LogRecord created from now on redacted (idempotent)."""
    if logging.getLogRecordFactory() is not _redacting_record_factory:
        logging.setLogRecordFactory(_redacting_record_factory)


def configure_logging(service: str, level: str = "info", stream: Any = None) -> logging.Handler:
    """Install redaction and the JSON formatter on the root logger; returns the handler."""
    install_redaction()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that log request lines with credentials in URLs stay quiet.
    for noisy in ("aiohttp.access", "asyncio", "urllib3", "google.auth"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler
