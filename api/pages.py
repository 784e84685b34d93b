"""Small HTML pages shown to people whose scan cannot be redirected, and the consent page
asking a scan's precise position."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Sequence
from html import escape
from urllib.parse import urlsplit

from fastapi.responses import HTMLResponse

from api.security_headers import COMMON_HEADERS
from campaigns.scanning.rules import preferred_languages

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:15vh auto;padding:0 1.5rem;"
    "color:#222;text-align:center}h1{font-size:1.5rem}p{color:#555;line-height:1.5}"
)
_TEMPLATE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>{style}</style>
</head><body><h1>{title}</h1><p>{message}</p></body></html>
"""
#: The static pages' CSP: their one inline style allowed by its hash (CSP Level 3 §8.3).
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
_PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex", **COMMON_HEADERS}


def page(status: int, title: str, message: str, *, lang: str = "en") -> HTMLResponse:
    """An HTML page with ``status`` in language ``lang`` (``en`` or ``fr``); never cached
    (the code may be re-pointed later)."""
    body = _TEMPLATE.format(title=escape(title), message=escape(message), style=_STYLE, lang=lang)
    headers = {
        **_HEADERS,
        "Content-Security-Policy": _PAGE_CSP,
        "Content-Language": lang,
        "Vary": "Accept-Language",
    }
    return HTMLResponse(body, status_code=status, headers=headers)


def with_headers(response: HTMLResponse, headers: list[tuple[bytes, bytes]]) -> HTMLResponse:
    """A copy of a prepared page with ``headers`` added (``Strict-Transport-Security``
    when the base URL is https: :func:`api.security_headers.hsts_headers`)."""
    if not headers:
        return response
    copy = HTMLResponse(bytes(response.body), status_code=response.status_code)
    copy.raw_headers = [*response.raw_headers, *headers]
    return copy


#: The words of the pages shown instead of a redirect: status -> language -> (title,
#: message). French for France's and Belgium's shoppers, English otherwise.
_STATIC_TEXT: dict[int, dict[str, tuple[str, str]]] = {
    404: {
        "en": ("Code not found", "This code is not (or no longer) in use."),
        "fr": ("Code introuvable", "Ce code n'est pas (ou plus) utilisé."),
    },
    410: {
        "en": ("This offer is not available", "The campaign behind this code is not running."),
        "fr": (
            "Cette offre n'est pas disponible",
            "L'opération derrière ce code n'est pas en cours.",
        ),
    },
    403: {
        "en": (
            "Please tap the tag again",
            "This link has already been used or could not be verified. Hold your phone to "
            "the tag again to open it.",
        ),
        "fr": (
            "Approchez à nouveau votre téléphone",
            "Ce lien a déjà servi ou n'a pas pu être vérifié. Approchez à nouveau votre "
            "téléphone de l'étiquette pour l'ouvrir.",
        ),
    },
}


def _static(status: int) -> dict[str, HTMLResponse]:
    return {lang: page(status, *words, lang=lang) for lang, words in _STATIC_TEXT[status].items()}


def not_found_page() -> dict[str, HTMLResponse]:
    """404 for an unknown, malformed or disabled code, by language (``en``, ``fr``: pick
    with :func:`page_language`)."""
    return _static(404)


def gone_page() -> dict[str, HTMLResponse]:
    """410 for a code whose campaign has not started, has ended or is archived, by
    language."""
    return _static(410)


def tap_again_page() -> dict[str, HTMLResponse]:
    """403 for an NFC tap whose SUN message failed or was already used, under the
    campaign's ``nfc_invalid_tap: block`` (reloading the page replays the message), by
    language."""
    return _static(403)


#: The consent page's words, by language (``Accept-Language``; English otherwise).
_LOCATION_TEXT = {
    "en": {
        "title": "One moment",
        "why": "To tell which shop this code was scanned in, we ask your browser for your "
        "position once. It is used only for this scan's statistics. You can refuse: you "
        "will be taken to the page either way.",
        "go": "Continue",
    },
    "fr": {
        "title": "Un instant",
        "why": "Pour savoir dans quel magasin ce code a été scanné, nous demandons une fois "
        "votre position à votre navigateur. Elle ne sert qu'aux statistiques de ce scan. "
        "Vous pouvez refuser : vous serez conduit à la page dans tous les cas.",
        "go": "Continuer",
    },
}

#: Seconds the page waits for the browser's answer before going on anyway.
LOCATION_WAIT_S = 4

_LOCATION_TEMPLATE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<noscript><meta http-equiv="refresh" content="0;url={href}"></noscript>
<title>{title}</title>
<style nonce="{nonce}">body{{font-family:system-ui,sans-serif;max-width:32rem;margin:15vh auto;
padding:0 1.5rem;color:#222;text-align:center}}h1{{font-size:1.5rem}}
p{{color:#555;line-height:1.5}}a{{color:#0b57d0}}</style>
</head><body><h1>{title}</h1><p>{why}</p><p><a href="{href}">{go}</a></p>
<script nonce="{nonce}">(function () {{
  var destination = {destination}, beacon = {beacon}, done = false;
  function go() {{ if (!done) {{ done = true; window.location.replace(destination); }} }}
  setTimeout(go, {wait_ms});
  if (!navigator.geolocation || !window.fetch) {{ go(); return; }}
  navigator.geolocation.getCurrentPosition(function (p) {{
    fetch(beacon, {{method: "POST", credentials: "omit", keepalive: true,
      headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{lat: p.coords.latitude, lon: p.coords.longitude,
        accuracy_m: p.coords.accuracy}})}}).then(go, go);
  }}, go, {{enableHighAccuracy: true, timeout: {wait_ms}, maximumAge: 60000}});
}})();</script>
</body></html>
"""


def page_language(accept_language: str | None) -> str:
    """``fr`` or ``en``: the first of them by preference in ``Accept-Language``
    (:func:`campaigns.scanning.rules.preferred_languages`), ``en`` when neither is asked."""
    for language in preferred_languages(accept_language):
        if language in _LOCATION_TEXT:
            return language
    return "en"


def _script_json(value: str) -> str:
    """A JSON string literal safe inside ``<script>`` (no ``</script>``, no ``<!--``)."""
    return (
        json.dumps(value)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def location_page(
    *,
    destination: str,
    click_id: str,
    accept_language: str | None,
    token: str | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> HTMLResponse:
    """200: the consent page of a campaign with ``precise_location = ask``. It says why,
    asks the browser's Geolocation API once, posts the answer to
    ``/s/{click_id}/location`` (with ``?t=token``, the scan's signed click token, when
    given: :mod:`campaigns.scanning.click_tokens`), then goes on to ``destination``; a
    refusal, an error or
    :data:`LOCATION_WAIT_S` seconds without an answer go on too, and without JavaScript a
    meta refresh does. Inline style and script only, allowed by a fresh nonce in a
    strict ``Content-Security-Policy``; ``connect-src 'self'`` lets only the beacon out.
    ``extra_headers`` (raw pairs) are added, e.g. HSTS."""
    lang = page_language(accept_language)
    words = _LOCATION_TEXT[lang]
    nonce = secrets.token_urlsafe(18)
    body = _LOCATION_TEMPLATE.format(
        lang=lang,
        title=escape(words["title"]),
        why=escape(words["why"]),
        go=escape(words["go"]),
        href=escape(destination, quote=True),
        nonce=nonce,
        destination=_script_json(destination),
        beacon=_script_json(_beacon_url(click_id, token)),
        wait_ms=LOCATION_WAIT_S * 1000,
    )
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    headers = {
        **_HEADERS,
        "Content-Security-Policy": csp,
        "Content-Language": lang,
        "Vary": "Accept-Language",
    }
    response = HTMLResponse(body, status_code=200, headers=headers)
    response.raw_headers.extend(extra_headers)
    return response


def _beacon_url(click_id: str, token: str | None) -> str:
    return f"/s/{click_id}/location" + (f"?t={token}" if token else "")


#: The visitor-cookie question's words, by language.
_COOKIE_TEXT = {
    "en": {
        "title": "One question",
        "why": "May we remember this device with a cookie? It holds a random number, no "
        "personal data, and lets the brand count that the same person scanned several of "
        "its codes (statistics only) for up to 13 months. You will be taken to the page "
        "either way.",
        "yes": "Yes, remember",
        "no": "No thanks",
    },
    "fr": {
        "title": "Une question",
        "why": "Pouvons-nous reconnaître cet appareil grâce à un cookie ? Il contient un "
        "numéro aléatoire, aucune donnée personnelle, et permet à la marque de compter "
        "qu'une même personne a scanné plusieurs de ses codes (statistiques uniquement), "
        "pendant 13 mois au plus. Vous serez conduit à la page dans tous les cas.",
        "yes": "Oui, d'accord",
        "no": "Non merci",
    },
}

_COOKIE_TEMPLATE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style nonce="{nonce}">body{{font-family:system-ui,sans-serif;max-width:32rem;margin:15vh auto;
padding:0 1.5rem;color:#222;text-align:center}}h1{{font-size:1.5rem}}
p{{color:#555;line-height:1.5}}button{{font:inherit;margin:.5rem;padding:.6rem 1.2rem}}</style>
</head><body><h1>{title}</h1>{location}<p>{why}</p>
<form method="post" action="{action}">
<input type="hidden" name="next" value="{href}">
<input type="hidden" name="t" value="{token}">
<button type="submit" name="answer" value="yes">{yes}</button>
<button type="submit" name="answer" value="no">{no}</button>
</form>{script}
</body></html>
"""

_COOKIE_LOCATION_SCRIPT = """
<script nonce="{nonce}">(function () {{
  var beacon = {beacon};
  if (!navigator.geolocation || !window.fetch) {{ return; }}
  navigator.geolocation.getCurrentPosition(function (p) {{
    fetch(beacon, {{method: "POST", credentials: "omit", keepalive: true,
      headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{lat: p.coords.latitude, lon: p.coords.longitude,
        accuracy_m: p.coords.accuracy}})}});
  }}, function () {{}}, {{enableHighAccuracy: true, timeout: {wait_ms}, maximumAge: 60000}});
}})();</script>"""


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def cookie_consent_page(
    *,
    destination: str,
    click_id: str,
    token: str,
    accept_language: str | None,
    location_token: str | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> HTMLResponse:
    """200: the consent page of an organization with ``visitor_cookie_consent = ask``,
    shown to a person's scan without the visitor cookie nor a refusal. It says why and
    asks; the answer is a form ``POST /s/{click_id}/consent`` (``answer`` ``yes`` or
    ``no``, ``next`` = ``destination``, ``t`` = ``token``, the scan's signed click token
    binding ``destination``), which sets the visitor cookie (yes) or the refusal cookie
    (no) and goes on to ``destination`` (303). No JavaScript needed; no timeout (the
    person answers). With ``location_token`` (the campaign also has
    ``precise_location = ask``), the page also asks the browser's position once and
    posts it to the beacon, as :func:`location_page` does, without leaving the page.
    ``Content-Security-Policy`` as :func:`location_page`'s, with ``form-action`` limited
    to this origin and the destination's (a form's redirect is checked against it)."""
    lang = page_language(accept_language)
    words = _COOKIE_TEXT[lang]
    nonce = secrets.token_urlsafe(18)
    location, script = "", ""
    if location_token is not None:
        location = f"<p>{escape(_LOCATION_TEXT[lang]['why'])}</p>"
        script = _COOKIE_LOCATION_SCRIPT.format(
            nonce=nonce,
            beacon=_script_json(_beacon_url(click_id, location_token)),
            wait_ms=LOCATION_WAIT_S * 1000,
        )
    body = _COOKIE_TEMPLATE.format(
        lang=lang,
        title=escape(words["title"]),
        why=escape(words["why"]),
        yes=escape(words["yes"]),
        no=escape(words["no"]),
        location=location,
        action=escape(f"/s/{click_id}/consent", quote=True),
        href=escape(destination, quote=True),
        token=escape(token, quote=True),
        nonce=nonce,
        script=script,
    )
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        f"connect-src 'self'; img-src 'none'; base-uri 'none'; "
        f"form-action 'self' {_origin(destination)}; frame-ancestors 'none'"
    )
    headers = {
        **_HEADERS,
        "Content-Security-Policy": csp,
        "Content-Language": lang,
        "Vary": "Accept-Language",
    }
    response = HTMLResponse(body, status_code=200, headers=headers)
    response.raw_headers.extend(extra_headers)
    return response
