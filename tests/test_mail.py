"""E-mailed sign-in links (:mod:`campaigns.mail`): the SMTP URL, the message, and sending
to a real SMTP server (aiosmtpd) in plain, STARTTLS and authenticated modes."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from campaigns.mail import MailNotSent, SmtpServer, parse_smtp_url, send_message, sign_in_message
from campaigns.settings import Settings
from tests.fixtures.smtp import free_port, self_signed, smtp_server

URL = "https://app.example.com/app/sign-in/AbC-123_xyz"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtps://ann:s%40cret@mail.example.com",
            ("mail.example.com", 465, "tls", "ann", "s@cret"),
        ),
        ("smtp://ann:pw@mail.example.com:587", ("mail.example.com", 587, "starttls", "ann", "pw")),
        ("smtp://relay.local:25", ("relay.local", 25, "plain", None, None)),
        ("smtp://relay.local:25?starttls=true", ("relay.local", 25, "starttls", None, None)),
        ("SMTP://localhost", ("localhost", 587, "plain", None, None)),
    ],
)
def test_smtp_urls(url: str, expected: tuple[object, ...]) -> None:
    server = parse_smtp_url(url)
    assert (server.host, server.port, server.security, server.username, server.password) == (
        expected
    )
    assert "pw" not in repr(server) and "cret" not in repr(server)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://mail.example.com", "must start with smtp:// or smtps://"),
        ("smtp://", "must name a host"),
        ("smtp://ann@mail.example.com", "a user without a password"),
        ("smtp://ann:topsecret@mail.example.com?starttls=false", "only sent over TLS"),
        ("smtp://mail.example.com/inbox", "must not have a path"),
        ("smtp://mail.example.com?tls=1", "unknown parameter(s) tls"),
        ("smtp://mail.example.com:99999", "invalid port"),
        ("smtps://:topsecret@mail.example.com", "a password without a user"),
        ("smtps://ann:top%ZZsecret@mail.example.com", "the password has a bad %-escape"),
        ("smtps://ann:topsecret%@mail.example.com", "the password has a bad %-escape"),
        ("smtps://ann:topsecret%ff@mail.example.com", "the password is not UTF-8"),
        ("smtps://an%Zn:topsecret@mail.example.com", "the user has a bad %-escape"),
    ],
)
def test_bad_smtp_urls_are_refused_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as exc:
        parse_smtp_url(url)
    assert "topsecret" not in str(exc.value)


def test_a_percent_escaped_password_is_decoded() -> None:
    server = parse_smtp_url("smtps://ann%40acme:p%25ss%2Fw@mail.example.com")
    assert (server.username, server.password) == ("ann@acme", "p%ss/w")


@pytest.mark.parametrize(
    "sender",
    [
        "noreply@example.com\r\nBcc: all@example.com",
        "Passerelle <noreply@example.com>\nX-Spam: no",
        "noreply@example.com\r",
        "Pass\x00erelle <noreply@example.com>",
        "a@example.com, b@example.com",
        "Passerelle <noreply@example.com",
        "Passerelle <noreply@example.com> trailing",
        "noreply@",
        "@example.com",
    ],
)
def test_settings_refuse_a_sender_that_is_not_one_address_on_one_line(sender: str) -> None:
    with pytest.raises(ValueError, match="PASSERELLE_SMTP_FROM must be an e-mail address"):
        Settings(smtp_from=sender)


@pytest.mark.parametrize(
    "sender",
    ["noreply@example.com", "Passerelle <noreply@example.com>", '"Acme, Inc" <a@b.example>'],
)
def test_settings_accept_one_address_with_or_without_a_name(sender: str) -> None:
    assert Settings(smtp_from=sender).mail_sender == sender


def test_settings_refuse_a_bad_smtp_url_and_default_the_sender() -> None:
    with pytest.raises(ValueError, match="PASSERELLE_SMTP_URL must start with smtp"):
        Settings(smtp_url="mailto:ann@example.com")
    with pytest.raises(ValueError, match="PASSERELLE_SMTP_FROM must be an e-mail address"):
        Settings(smtp_from="Passerelle")
    settings = Settings(smtp_url="smtp://relay.local:25", app_url="https://app.example.com")
    assert settings.smtp_server == SmtpServer("relay.local", 25, "plain")
    assert settings.mail_sender == "Passerelle <noreply@app.example.com>"
    assert Settings(smtp_url="").smtp_server is None
    assert "relay" not in repr(settings)


def test_the_message_has_both_parts_in_the_chosen_language() -> None:
    message = sign_in_message(
        sender="Passerelle <noreply@example.com>",
        to="ann@acme.example",
        url=URL,
        kind="invite",
        valid_hours=24,
        language="fr",
        organization="Acme & Fils",
        inviter="boss@acme.example",
    )
    assert message["Subject"] == "Votre invitation au tableau de bord Passerelle"
    assert message["To"] == "ann@acme.example"
    assert message["Message-ID"].endswith("@example.com>")
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert plain is not None and rich is not None
    text, page = plain.get_content(), rich.get_content()
    assert (
        "boss@acme.example vous invite au tableau de bord Passerelle de l'organisation Acme & Fils."
        in text
    )
    assert URL in text and "pendant 24 heures" in text
    assert f'href="{URL}"' in page
    assert "Acme &amp; Fils" in page and 'lang="fr"' in page
    english = sign_in_message(
        sender="noreply@example.com", to="ann@acme.example", url=URL, kind="reset", valid_hours=2
    )
    assert english["Subject"] == "Your new Passerelle sign-in link"
    body = english.get_body(preferencelist=("plain",))
    assert body is not None and "for 2 hours" in body.get_content()


def _message() -> object:
    return sign_in_message(
        sender="noreply@example.com", to="ann@acme.example", url=URL, kind="reset", valid_hours=24
    )


def test_sent_through_a_plain_relay() -> None:
    with smtp_server() as smtp:
        send_message(parse_smtp_url(smtp.url), _message())  # type: ignore[arg-type]
        [received] = smtp.received
    assert received.rcpt_tos == ["ann@acme.example"]
    assert received.mail_from == "noreply@example.com"
    assert received.link() == URL


def test_sent_with_starttls_and_a_password(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    with smtp_server(tls_files=(cert, key), credentials=("mailer", "pa ss")) as smtp:
        url = smtp.url.replace("pa ss", "pa%20ss")
        send_message(parse_smtp_url(url), _message(), tls=trust)  # type: ignore[arg-type]
        assert [r.link() for r in smtp.received] == [URL]
        # Wrong password: refused, and the error names neither the password nor the link.
        bad = parse_smtp_url(f"smtp://mailer:nope@localhost:{smtp.port}")
        with pytest.raises(MailNotSent, match="refused the credentials") as refused:
            send_message(bad, _message(), tls=trust)  # type: ignore[arg-type]
        assert "nope" not in refused.value.reason and URL not in refused.value.reason
        # The system's trust store does not know this certificate: never sent blindly.
        with pytest.raises(MailNotSent, match="CERTIFICATE_VERIFY_FAILED"):
            send_message(parse_smtp_url(url), _message())  # type: ignore[arg-type]
        assert len(smtp.received) == 1


def test_credentials_are_never_sent_without_starttls() -> None:
    with smtp_server() as smtp:  # offers no STARTTLS
        server = parse_smtp_url(f"smtp://mailer:secret@127.0.0.1:{smtp.port}")
        with pytest.raises(MailNotSent, match="does not offer STARTTLS"):
            send_message(server, _message())  # type: ignore[arg-type]
        assert smtp.received == []


def test_a_refusal_and_an_unreachable_server_are_mail_not_sent() -> None:
    with smtp_server() as smtp:
        smtp.sink.refuse = "554 5.7.1 Message rejected"
        with pytest.raises(MailNotSent, match=re.escape("answered 554 5.7.1 Message rejected")):
            send_message(parse_smtp_url(smtp.url), _message())  # type: ignore[arg-type]
    closed = parse_smtp_url(f"smtp://127.0.0.1:{free_port()}", timeout_s=2)
    unreachable = re.escape("cannot send through the SMTP server 127.0.0.1")
    with pytest.raises(MailNotSent, match=unreachable):
        send_message(closed, _message())  # type: ignore[arg-type]
