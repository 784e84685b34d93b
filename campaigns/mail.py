"""E-mailed sign-in links: the SMTP server of ``PASSERELLE_SMTP_URL`` and the message.

The URL (RFC 3986; credentials percent-encoded) chooses how to talk to the server:

- ``smtps://user:pass@host:465``: implicit TLS from the first byte (RFC 8314 §3.3), the
  recommended form; port 465 by default.
- ``smtp://user:pass@host:587``: plain connection upgraded with STARTTLS (RFC 3207)
  before anything else is said; with credentials STARTTLS is required (a server that
  does not offer it is refused: a password never travels in clear). Port 587 by default.
- ``smtp://host:25``: no credentials, no TLS, for a relay on the same host or network
  (``localhost`` Postfix, a sidecar). ``?starttls=true`` asks for STARTTLS anyway.

Certificates are checked against the system's trust store and the host name
(:func:`ssl.create_default_context`). Messages (RFC 5322, built with :mod:`email`) have a
plain-text part and an HTML alternative (RFC 2046 §5.1.4, ``multipart/alternative``),
in English or French. Sending is blocking :mod:`smtplib`: async callers use
:func:`send_async` (a worker thread). Nothing here logs a message or its link.
"""

from __future__ import annotations

import asyncio
import html
import re
import smtplib
import ssl
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

Security = Literal["tls", "starttls", "plain"]
MailLanguage = Literal["en", "fr"]
LinkKind = Literal["invite", "reset"]
DEFAULT_PORTS: Final[dict[str, int]] = {"smtps": 465, "smtp": 587}


class MailNotSent(Exception):
    """The SMTP server could not be reached or refused the message. ``reason`` is one
    line for people (never the message, its link, or the server's password)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to send (parsed from ``PASSERELLE_SMTP_URL``)."""

    host: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0


_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _unquote_strict(value: str, what: str) -> str:
    """Percent-decode a URL's user or password (RFC 3986 §2.1): every ``%`` starts two
    hexadecimal digits and the bytes are UTF-8. Raises :class:`ValueError` naming
    ``what``, never the value."""
    if _PERCENT_ESCAPE.search(value):
        raise ValueError(f"PASSERELLE_SMTP_URL: the {what} has a bad %-escape (write % as %25)")
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"PASSERELLE_SMTP_URL: the {what} is not UTF-8 once decoded") from None


def parse_smtp_url(url: str, *, timeout_s: float = 10.0) -> SmtpServer:
    """``smtp://`` / ``smtps://`` URL -> :class:`SmtpServer` (see the module docstring).
    Raises :class:`ValueError` with a message that never repeats the password."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("PASSERELLE_SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("PASSERELLE_SMTP_URL must name a host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("PASSERELLE_SMTP_URL has an invalid port") from None
    if parts.path not in ("", "/"):
        raise ValueError("PASSERELLE_SMTP_URL must not have a path")
    query = parse_qs(parts.query)
    unknown = set(query) - {"starttls"}
    if unknown:
        raise ValueError(f"PASSERELLE_SMTP_URL: unknown parameter(s) {', '.join(sorted(unknown))}")
    starttls = query.get("starttls", [""])[-1].lower()
    if starttls not in ("", "true", "false"):
        raise ValueError("PASSERELLE_SMTP_URL: starttls must be true or false")
    if parts.password is not None and not parts.username:
        raise ValueError("PASSERELLE_SMTP_URL has a password without a user")
    username = _unquote_strict(parts.username, "user") if parts.username else None
    password = _unquote_strict(parts.password, "password") if parts.password is not None else None
    if username is not None and password is None:
        raise ValueError("PASSERELLE_SMTP_URL names a user without a password")
    security: Security
    if scheme == "smtps":
        security = "tls"
    elif username is not None:
        if starttls == "false":
            raise ValueError("PASSERELLE_SMTP_URL: credentials are only sent over TLS")
        security = "starttls"
    else:
        security = "starttls" if starttls == "true" else "plain"
    return SmtpServer(
        host=parts.hostname,
        port=port,
        security=security,
        username=username,
        password=password,
        timeout_s=timeout_s,
    )


#: The message texts: key -> (English, French). ``{...}`` are filled by :func:`sign_in_message`.
TEXTS: Final[dict[str, tuple[str, str]]] = {
    "subject_invite": (
        "Your invitation to the Passerelle dashboard",
        "Votre invitation au tableau de bord Passerelle",
    ),
    "subject_reset": (
        "Your new Passerelle sign-in link",
        "Votre nouveau lien de connexion Passerelle",
    ),
    "hello": ("Hello,", "Bonjour,"),
    "invite": (
        "{inviter} invites you to the Passerelle dashboard of {organization}.",
        "{inviter} vous invite au tableau de bord Passerelle de l'organisation {organization}.",
    ),
    "invite_anonymous": (
        "You are invited to the Passerelle dashboard of {organization}.",
        "Vous êtes invité(e) au tableau de bord Passerelle de l'organisation {organization}.",
    ),
    "reset": (
        "Here is a new link to sign in to the Passerelle dashboard.",
        "Voici un nouveau lien pour vous connecter au tableau de bord Passerelle.",
    ),
    "action": (
        "Open this link to choose your password:",
        "Ouvrez ce lien pour choisir votre mot de passe :",
    ),
    "button": ("Choose my password", "Choisir mon mot de passe"),
    "validity": (
        "The link works once, for {hours} hours. Previous links no longer work.",
        "Le lien fonctionne une seule fois, pendant {hours} heures. "
        "Les liens précédents ne fonctionnent plus.",
    ),
    "ignore": (
        "If you did not expect this e-mail, you can ignore it.",
        "Si vous n'attendiez pas cet e-mail, vous pouvez l'ignorer.",
    ),
}


def _t(key: str, language: MailLanguage, **values: object) -> str:
    text = TEXTS[key][0 if language == "en" else 1]
    return text.format(**values) if values else text


def sign_in_message(
    *,
    sender: str,
    to: str,
    url: str,
    kind: LinkKind,
    valid_hours: int,
    language: MailLanguage = "en",
    organization: str | None = None,
    inviter: str | None = None,
) -> EmailMessage:
    """The e-mail carrying a sign-in link ``url`` to ``to``: ``invite`` (a new user of
    ``organization``, invited by ``inviter`` when known) or ``reset`` (a fresh link).
    ``text/plain`` with a ``text/html`` alternative; ``sender`` is an RFC 5322 mailbox
    (``Passerelle <noreply@example.com>``)."""
    message = EmailMessage()
    message["Subject"] = _t(f"subject_{kind}", language)
    message["From"] = sender
    message["To"] = Address(addr_spec=to)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    message["Content-Language"] = language
    if kind == "invite":
        where = organization or "Passerelle"
        lead = (
            _t("invite", language, inviter=inviter, organization=where)
            if inviter
            else _t("invite_anonymous", language, organization=where)
        )
    else:
        lead = _t("reset", language)
    lines = [
        _t("hello", language),
        "",
        lead,
        "",
        _t("action", language),
        url,
        "",
        _t("validity", language, hours=valid_hours),
        _t("ignore", language),
    ]
    message.set_content("\n".join(lines) + "\n")
    e = html.escape
    body = (
        f'<!DOCTYPE html><html lang="{language}"><head><meta charset="utf-8">'
        f"<title>{e(message['Subject'])}</title></head>"
        '<body style="font-family:sans-serif;line-height:1.5;color:#1b1b1b">'
        f"<p>{e(_t('hello', language))}</p><p>{e(lead)}</p>"
        f'<p><a href="{e(url)}" style="display:inline-block;padding:0.6em 1.2em;'
        'background:#1f5fbf;color:#ffffff;text-decoration:none;border-radius:4px">'
        f"{e(_t('button', language))}</a></p>"
        f'<p>{e(_t("action", language))}<br><a href="{e(url)}">{e(url)}</a></p>'
        f"<p>{e(_t('validity', language, hours=valid_hours))}<br>"
        f"{e(_t('ignore', language))}</p></body></html>"
    )
    message.add_alternative(body, subtype="html")
    return message


def send_message(
    server: SmtpServer, message: EmailMessage, *, tls: ssl.SSLContext | None = None
) -> None:
    """Send ``message`` through ``server`` (blocking). ``tls`` replaces the default
    verifying context (tests trust their own certificate with it). Raises
    :class:`MailNotSent` when the server is unreachable, TLS or authentication fails,
    or a recipient or the message is refused."""
    context = tls or ssl.create_default_context()
    where = f"{server.host}:{server.port}"
    client: smtplib.SMTP
    try:
        if server.security == "tls":
            client = smtplib.SMTP_SSL(
                server.host, server.port, timeout=server.timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=server.timeout_s)
        with client:
            client.ehlo()
            if server.security == "starttls":
                if not client.has_extn("starttls"):
                    raise MailNotSent(f"the SMTP server {where} does not offer STARTTLS")
                client.starttls(context=context)
                client.ehlo()
            if server.username is not None:
                client.login(server.username, server.password or "")
            client.send_message(message)
    except MailNotSent:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise MailNotSent(
            f"the SMTP server {where} refused the credentials ({exc.smtp_code})"
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = ", ".join(f"{addr}: {code}" for addr, (code, _) in exc.recipients.items())
        raise MailNotSent(f"the SMTP server {where} refused the recipient ({codes})") from None
    except smtplib.SMTPResponseException as exc:
        reply = (
            exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
        )
        reason = " ".join(reply.split())[:200]
        raise MailNotSent(f"the SMTP server {where} answered {exc.smtp_code} {reason}") from None
    except (smtplib.SMTPException, OSError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise MailNotSent(f"cannot send through the SMTP server {where}: {reason}") from None


async def send_async(
    server: SmtpServer, message: EmailMessage, *, tls: ssl.SSLContext | None = None
) -> None:
    """:func:`send_message` in a worker thread (the event loop keeps running)."""
    await asyncio.to_thread(send_message, server, message, tls=tls)
