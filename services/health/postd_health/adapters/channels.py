"""Outbound channels: email over SMTP and Slack incoming webhooks."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.utils import make_msgid

import aiohttp

from postd_common.secrets import Secret
from postd_health.ports import DeliveryFailed


class SmtpEmailSender:
    """Hands messages to an SMTP server (STARTTLS and login when configured). smtplib
    blocks, so each send runs in a worker thread."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str = "",
        password: Secret | None = None,
        starttls: bool = False,
        timeout: float = 15.0,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=self._sender.rpartition("@")[2] or None)
        message.set_content(body)
        await asyncio.to_thread(self._send_blocking, message)

    def _send_blocking(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls()
                if self._username and self._password:
                    smtp.login(self._username, self._password.reveal())
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryFailed("the mail server refused the recipient", permanent=True) from exc
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600
            raise DeliveryFailed(
                f"the mail server answered {exc.smtp_code}", permanent=permanent
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"the mail server is unreachable: {type(exc).__name__}") from exc


class HttpSlackSender:
    """POSTs to a Slack incoming webhook. The URL is a secret: it is never put in an
    error or a log line."""

    def __init__(self, session: aiohttp.ClientSession, *, timeout: float = 10.0) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, webhook_url: str, text: str) -> None:
        try:
            async with self._session.post(
                webhook_url, json={"text": text}, timeout=self._timeout
            ) as response:
                answer = (await response.text())[:100]
                if response.status == 200:
                    return
                retry = response.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"Slack is unreachable: {type(exc).__name__}") from exc
        if response.status == 429:
            raise DeliveryFailed(
                "Slack rate-limited the message",
                retry_after=float(retry) if retry.isdigit() else 30.0,
            )
        # 400 invalid_payload, 403 action_prohibited, 404 no_service, 410 archived: the
        # hook will not take this message however often it is sent.
        permanent = 400 <= response.status < 500
        raise DeliveryFailed(f"Slack answered {response.status} {answer!r}", permanent=permanent)
