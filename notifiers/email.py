"""The e-mail sink: one multipart/alternative message (plain text and HTML) per notification.

SMTP with STARTTLS (``security = "starttls"``), TLS from the start (``"tls"``)
or neither (``"none"``, for a relay on the same host), and a login when
``username`` is set. The Message-ID derives from the alert id and the route, so
a re-delivered notification is the same message to a mail client. Permanent
SMTP refusals (5xx, a failed login) are not retried; 4xx and connection errors
are.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from newswatch.config import EmailSettings
from newswatch.errors import ConfigError
from notifiers.errors import PermanentFailure, TransientFailure
from notifiers.messages import Notification

__all__ = ["EmailSink"]


class EmailSink:
    """Sends notifications through one SMTP server."""

    kind = "email"

    def __init__(self, settings: EmailSettings, password: str | None, where: str = "email") -> None:
        if settings.security not in ("starttls", "tls", "none"):
            raise ConfigError(f"{where}: email.security must be 'starttls', 'tls' or 'none'")
        if not settings.to:
            raise ConfigError(f"{where}: email.to names no recipient")
        if settings.username and not password:
            raise ConfigError(
                f"{where}: email.username needs email.password_env or email.password_file"
            )
        self.settings = settings
        self._password = password

    def __str__(self) -> str:
        return f"email via {self.settings.host}:{self.settings.port}"

    def __repr__(self) -> str:
        return f"EmailSink({self.settings.host!r}, {self.settings.port})"

    def message(self, notification: Notification) -> EmailMessage:
        """The message for ``notification``: plain text, with an HTML alternative."""
        s = self.settings
        message = EmailMessage()
        message["Subject"] = f"{s.subject_prefix} {notification.subject}".strip()
        message["From"] = s.sender
        message["To"] = ", ".join(s.to)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = f"<{notification.alert_id}.{notification.route}@newswatch>"
        message["X-Newswatch-Alert-Id"] = notification.alert_id
        message.set_content(notification.plain_text())
        message.add_alternative(notification.html(), subtype="html")
        return message

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file or None)

    def deliver(self, notification: Notification) -> None:
        s = self.settings
        message = self.message(notification)
        try:
            if s.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=self._context()
                )
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            with client:
                client.ehlo()
                if s.security == "starttls":
                    client.starttls(context=self._context())
                    client.ehlo()
                if s.username:
                    client.login(s.username, self._password or "")
                client.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentFailure(f"{self}: login refused ({exc.smtp_code})") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            failure = TransientFailure if all(400 <= c < 500 for c in codes) else PermanentFailure
            raise failure(f"{self}: recipients refused ({', '.join(map(str, codes))})") from exc
        except smtplib.SMTPResponseException as exc:
            reason = f"{self}: {exc.smtp_code} {_text(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500:
                raise TransientFailure(reason) from exc
            raise PermanentFailure(reason) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentFailure(f"{self}: {exc}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentFailure(
                f"{self}: certificate not trusted: {exc.verify_message}"
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientFailure(f"{self}: {exc}") from exc


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return " ".join(text.split())[:300]
