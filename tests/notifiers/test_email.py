"""Story alerts delivered by e-mail to a real local SMTP server (aiosmtpd).

Plain SMTP, then STARTTLS with a self-signed certificate the route trusts and a
login whose password comes from a file; a refused login ends in a dead letter.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import ssl
from collections.abc import Iterator
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from newswatch.config import EmailSettings
from tests.conftest import free_port
from tests.connectors.servers import tls_certificate
from tests.notifiers.harness import (
    EVIDENCE,
    LINK,
    dead_letters,
    publish,
    route,
    running,
    story_alert,
    wait_until,
    wait_until_committed,
)

USER, PASSWORD = "newswatch", "correct horse battery staple"


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts, and the logins it saw."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (USER, PASSWORD):
            self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@contextlib.contextmanager
def smtp_server(mailbox: Mailbox, **options) -> Iterator[int]:
    """aiosmtpd on 127.0.0.1 and a free port, for the block."""
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def parts(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.iter_parts()}


def test_a_story_alert_is_one_message_in_plain_text_and_html(notify):
    mailbox = Mailbox()
    headline = "Taiwan <script>alert(1)</script> & the strait"
    with smtp_server(mailbox) as port:
        mail = EmailSettings(
            host="127.0.0.1", port=port, security="none", sender="alerts@example.org",
            to=["desk@example.org"],
        )  # fmt: skip
        notify.notify.routes = [route(name="desk", email=mail)]
        alert = story_alert(headline=headline, severity=3, outlets=4)
        publish(notify, alert)
        with running(notify):
            wait_until(lambda: mailbox.messages, 30, "a message")
            wait_until_committed(notify)
    (message,) = mailbox.messages

    assert message["To"] == "desk@example.org"
    assert message["X-Newswatch-Alert-Id"] == alert.alert_id
    assert message["Subject"] == f"[newswatch] ESCALATED new · severity 3: {headline}"
    body = parts(message)
    assert set(body) == {"text/plain", "text/html"}
    text, html = body["text/plain"], body["text/html"]
    for shown in (headline, "Severity 3", "military, grayzone", EVIDENCE, LINK, "4 outlets"):
        assert shown in text
    assert "Taiwan &lt;script&gt;alert(1)&lt;/script&gt; &amp; the strait" in html
    assert "<script>" not in html
    assert f'<a href="{LINK}">' in html
    assert "military, grayzone" in html and "Severity <strong>3</strong>" in html


def test_starttls_and_login_are_used_when_configured(notify, tmp_path):
    mailbox = Mailbox()
    (tmp_path / "password").write_text(PASSWORD + "\n", encoding="utf-8")
    with tls_certificate(tmp_path, "localhost") as (cert, key):
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        with smtp_server(
            mailbox,
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            authenticator=mailbox.authenticate,
        ) as port:
            mail = EmailSettings(
                host="localhost", port=port, security="starttls", ca_file=str(cert),
                username=USER, password_file=str(tmp_path / "password"), to=["desk@example.org"],
            )  # fmt: skip
            notify.notify.routes = [route(name="desk", email=mail)]
            publish(notify, story_alert())
            with running(notify):
                wait_until(lambda: mailbox.messages, 30, "a message")
    assert mailbox.logins == [USER]
    assert len(mailbox.messages) == 1


def test_a_refused_login_ends_in_a_dead_letter(notify, tmp_path):
    mailbox = Mailbox()
    (tmp_path / "password").write_text("wrong", encoding="utf-8")
    with tls_certificate(tmp_path, "localhost") as (cert, key):
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        with smtp_server(
            mailbox, tls_context=tls, auth_required=True, authenticator=mailbox.authenticate
        ) as port:
            mail = EmailSettings(
                host="localhost", port=port, ca_file=str(cert), username=USER,
                password_file=str(tmp_path / "password"), to=["desk@example.org"],
            )  # fmt: skip
            notify.notify.routes = [route(name="desk", email=mail)]
            publish(notify, story_alert())
            with running(notify):
                wait_until_committed(notify)
    (letter,) = dead_letters(notify)
    assert letter.error == "PermanentFailure"
    assert "login refused (535)" in letter.message
    assert mailbox.messages == []
    assert "wrong" not in letter.message
