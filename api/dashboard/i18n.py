"""The dashboard's two languages and locale formatting (Babel, CLDR data).

The language is the ``passerelle_lang`` cookie when set (the switch in the page header),
else the browser's ``Accept-Language`` (:func:`campaigns.scanning.rules.preferred_languages`),
else English. Numbers, money (minor units -> the currency's CLDR precision) and dates are
formatted for ``fr_FR`` or ``en_GB``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Final, Literal

from babel.dates import format_datetime
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_precision

from campaigns.scanning.rules import preferred_languages

Language = Literal["en", "fr"]
LANGUAGES: Final[tuple[Language, ...]] = ("en", "fr")
LANG_COOKIE: Final = "passerelle_lang"
_LOCALES: Final[dict[str, str]] = {"en": "en_GB", "fr": "fr_FR"}

#: Every text of the dashboard: key -> (English, French).
TEXTS: Final[dict[str, tuple[str, str]]] = {
    "app": ("Passerelle dashboard", "Tableau de bord Passerelle"),
    "skip": ("Skip to content", "Aller au contenu"),
    "nav": ("Main", "Principal"),
    "campaigns": ("Campaigns", "Campagnes"),
    "campaign": ("Campaign", "Campagne"),
    "stores": ("Stores", "Magasins"),
    "users": ("Users", "Utilisateurs"),
    "api_keys": ("API keys", "Clés d'API"),
    "account": ("My account", "Mon compte"),
    "sign_in": ("Sign in", "Se connecter"),
    "sign_out": ("Sign out", "Se déconnecter"),
    "email": ("E-mail", "E-mail"),
    "password": ("Password", "Mot de passe"),
    "new_password": ("New password", "Nouveau mot de passe"),
    "current_password": ("Current password", "Mot de passe actuel"),
    "choose_password": ("Choose your password", "Choisissez votre mot de passe"),
    "password_hint": (
        "At least 10 characters; a sentence is fine.",
        "Au moins 10 caractères ; une phrase convient.",
    ),
    "save": ("Save", "Enregistrer"),
    "create": ("Create", "Créer"),
    "edit": ("Edit", "Modifier"),
    "archive": ("Archive", "Archiver"),
    "unarchive": ("Restore", "Restaurer"),
    "archived": ("Archived", "Archivée"),
    "new_campaign": ("New campaign", "Nouvelle campagne"),
    "edit_campaign": ("Edit campaign", "Modifier la campagne"),
    "name": ("Name", "Nom"),
    "destination_url": ("Destination URL", "URL de destination"),
    "timezone": ("Time zone", "Fuseau horaire"),
    "cost": ("Cost", "Coût"),
    "currency": ("Currency", "Devise"),
    "scans": ("Scans", "Scans"),
    "unique_visitors": ("Unique visitors", "Visiteurs uniques"),
    "conversions": ("Conversions", "Conversions"),
    "revenue": ("Revenue", "Chiffre d'affaires"),
    "roas": ("ROAS", "ROAS"),
    "conversion_rate": ("Conversion rate", "Taux de conversion"),
    "period": ("Period", "Période"),
    "period_7d": ("Last 7 days", "7 derniers jours"),
    "period_30d": ("Last 30 days", "30 derniers jours"),
    "period_90d": ("Last 90 days", "90 derniers jours"),
    "period_all": ("All time", "Depuis le début"),
    "show": ("Show", "Afficher"),
    "no_campaigns": ("No campaign yet.", "Aucune campagne pour l'instant."),
    "figures": ("Figures", "Chiffres"),
    "chart": ("Scans and conversions over time", "Scans et conversions dans le temps"),
    "interval": ("Interval", "Intervalle"),
    "hour": ("Hour", "Heure"),
    "day": ("Day", "Jour"),
    "week": ("Week", "Semaine"),
    "by_tag": ("By tag", "Par tag"),
    "by_store": ("By store", "Par magasin"),
    "by_channel": ("By channel", "Par canal"),
    "attribution": ("Attribution", "Attribution"),
    "model": ("Model", "Modèle"),
    "model_last_touch": ("Last touch", "Dernier contact"),
    "model_first_touch": ("First touch", "Premier contact"),
    "model_linear": ("Linear", "Linéaire"),
    "model_time_decay": ("Time decay", "Dégressif dans le temps"),
    "model_position_based": ("Position based", "Basé sur la position"),
    "credited_conversions": ("Credited conversions", "Conversions créditées"),
    "credited_revenue": ("Credited revenue", "Chiffre d'affaires crédité"),
    "total": ("Total", "Total"),
    "map": ("Map", "Carte"),
    "map_help": (
        "Stores, their geofences and the scan heatmap.",
        "Magasins, leurs zones et la carte de chaleur des scans.",
    ),
    "live": ("Live feed", "En direct"),
    "live_help": ("Latest scans as they arrive.", "Derniers scans en temps réel."),
    "live_waiting": ("Waiting for scans…", "En attente de scans…"),
    "live_connected": ("Connected", "Connecté"),
    "live_reconnecting": ("Reconnecting…", "Reconnexion…"),
    "live_unavailable": (
        "The live feed is not available yet; retrying by itself.",
        "Le direct n'est pas encore disponible ; nouvel essai automatique.",
    ),
    "row_content": ("Row as sent", "Ligne envoyée"),
    "tags": ("Tags", "Tags"),
    "new_tag": ("New tag", "Nouveau tag"),
    "per_store": ("One tag per store", "Un tag par magasin"),
    "labels_hint": (
        "Labels, comma-separated (one tag per store and label)",
        "Libellés séparés par des virgules (un tag par magasin et libellé)",
    ),
    "tags_created": ("{count} tag(s) created.", "{count} tag(s) créé(s)."),
    "repoint": ("Re-point", "Rediriger"),
    "tag_destination": (
        "Destination (empty: the campaign's)",
        "Destination (vide : celle de la campagne)",
    ),
    "ndef_hex": ("NDEF message (hex)", "Message NDEF (hex)"),
    "print": ("Print", "Impression"),
    "print_zip": (
        "Every QR code as files, with manifest.csv (ZIP)",
        "Tous les QR codes en fichiers, avec manifest.csv (ZIP)",
    ),
    "label_sheets": ("Label sheets (PDF)", "Planches d'étiquettes (PDF)"),
    "paper": ("Paper", "Papier"),
    "layout": ("Labels per page", "Étiquettes par page"),
    "layout_option": (
        "{columns} × {rows} ({count} labels)",
        "{columns} × {rows} ({count} étiquettes)",
    ),
    "sheet_caption": (
        "Text on every label (empty: each tag's label)",
        "Texte sur chaque étiquette (vide : le libellé du tag)",
    ),
    "download_sheets": ("Download the sheets", "Télécharger les planches"),
    "copy": ("Copy", "Copier"),
    "copied": ("Copied", "Copié"),
    "label": ("Label", "Libellé"),
    "kind": ("Kind", "Type"),
    "code": ("Code", "Code"),
    "status": ("Status", "Statut"),
    "store": ("Store", "Magasin"),
    "no_store": ("No store", "Aucun magasin"),
    "active": ("Active", "Actif"),
    "disabled": ("Disabled", "Désactivé"),
    "disable": ("Disable", "Désactiver"),
    "enable": ("Enable", "Activer"),
    "qr_of": ("QR code of tag", "QR code du tag"),
    "download": ("Download", "Télécharger"),
    "link": ("Link", "Lien"),
    "channel": ("Channel", "Canal"),
    "unknown": ("Unknown", "Inconnu"),
    "import_stores": ("Import stores", "Importer des magasins"),
    "import_help": (
        "CSV (name, external_id, lat, lon, radius_m, address, timezone) or GeoJSON.",
        "CSV (name, external_id, lat, lon, radius_m, address, timezone) ou GeoJSON.",
    ),
    "file": ("File", "Fichier"),
    "import": ("Import", "Importer"),
    "import_done": (
        "{created} store(s) created, {updated} updated.",
        "{created} magasin(s) créé(s), {updated} mis à jour.",
    ),
    "import_failed": (
        "Nothing was imported: fix the rows below.",
        "Rien n'a été importé : corrigez les lignes ci-dessous.",
    ),
    "row": ("Row", "Ligne"),
    "field": ("Field", "Champ"),
    "problem": ("Problem", "Problème"),
    "external_id": ("Store number", "Numéro de magasin"),
    "address": ("Address", "Adresse"),
    "radius_m": ("Radius (m)", "Rayon (m)"),
    "no_stores": ("No store yet.", "Aucun magasin pour l'instant."),
    "role": ("Role", "Rôle"),
    "role_admin": ("Admin", "Administrateur"),
    "role_editor": ("Editor", "Éditeur"),
    "role_viewer": ("Viewer", "Lecteur"),
    "invite": ("Invite", "Inviter"),
    "invite_link": (
        "Send this sign-in link to {email} (single use, valid {hours} h):",
        "Envoyez ce lien de connexion à {email} (usage unique, valable {hours} h) :",
    ),
    "link_mailed": (
        "A sign-in link was e-mailed to {email} (single use, valid {hours} h).",
        "Un lien de connexion a été envoyé à {email} (usage unique, valable {hours} h).",
    ),
    "mail_failed": (
        "The sign-in link could not be e-mailed to {email} ({reason}). Nothing was changed: "
        "try again later.",
        "Le lien de connexion n'a pas pu être envoyé à {email} ({reason}). Rien n'a été "
        "modifié : réessayez plus tard.",
    ),
    "new_link": ("New sign-in link", "Nouveau lien de connexion"),
    "remove": ("Remove", "Retirer"),
    "change_role": ("Change role", "Changer le rôle"),
    "key_name": ("What the key is for", "Usage de la clé"),
    "key_scopes": ("What it may do (scopes)", "Ce qu'elle peut faire (portées)"),
    "new_key": ("New key", "Nouvelle clé"),
    "key_shown_once": (
        "Copy this key now: it will not be shown again.",
        "Copiez cette clé maintenant : elle ne sera plus affichée.",
    ),
    "revoke": ("Revoke", "Révoquer"),
    "revoked": ("Revoked", "Révoquée"),
    "prefix": ("Prefix", "Préfixe"),
    "created": ("Created", "Créé"),
    "last_used": ("Last used", "Dernière utilisation"),
    "never": ("Never", "Jamais"),
    "password_changed": ("Your password was changed.", "Votre mot de passe a été modifié."),
    "language": ("Language", "Langue"),
    "bad_credentials": ("Wrong e-mail or password.", "E-mail ou mot de passe incorrect."),
    "too_many_attempts": (
        "Too many sign-in attempts. Try again in {seconds} seconds.",
        "Trop de tentatives de connexion. Réessayez dans {seconds} secondes.",
    ),
    "invalid_link": (
        "This sign-in link is unknown, already used or expired. Ask an admin for a new one.",
        "Ce lien de connexion est inconnu, déjà utilisé ou expiré. "
        "Demandez-en un nouveau à un administrateur.",
    ),
    "forbidden": ("Not allowed", "Action non autorisée"),
    "forbidden_role": (
        "Your role does not allow this change.",
        "Votre rôle ne permet pas cette modification.",
    ),
    "forbidden_csrf": (
        "This form has expired. Go back, reload the page and try again.",
        "Ce formulaire a expiré. Revenez en arrière, rechargez la page et réessayez.",
    ),
    "not_found": ("Not found", "Introuvable"),
    "not_found_text": ("This page does not exist.", "Cette page n'existe pas."),
    "error": ("Error", "Erreur"),
    "back": ("Back to campaigns", "Retour aux campagnes"),
    "signed_out": ("You are signed out.", "Vous êtes déconnecté."),
    "session_expired": (
        "Your session expired; please sign in again.",
        "Votre session a expiré ; reconnectez-vous.",
    ),
    "device": ("Device", "Appareil"),
    "city": ("City", "Ville"),
    "time": ("Time", "Heure"),
    "date": ("Date", "Date"),
    "chart_unavailable": (
        "This chart cannot be drawn for this period and interval (too many points, or the"
        " figures could not be read): choose a shorter period or a longer interval.",
        "Impossible de tracer ce graphique pour cette période et cet intervalle (trop de"
        " points, ou chiffres illisibles) : choisissez une période plus courte ou un"
        " intervalle plus long.",
    ),
    "zoom_in": ("Zoom in", "Zoom avant"),
    "zoom_out": ("Zoom out", "Zoom arrière"),
    "close": ("Close", "Fermer"),
    "event": ("Event", "Événement"),
    "scan": ("Scan", "Scan"),
    "conversion": ("Conversion", "Conversion"),
    "internal_scans": ("Staff scans", "Scans internes"),
    "internal_scans_help": (
        "Scans from phones signed into this dashboard (staff testing the posters they "
        "hang): left out of every other figure.",
        "Scans des téléphones connectés à ce tableau de bord (le personnel qui teste les "
        "affiches posées) : exclus de tous les autres chiffres.",
    ),
    "internal_scan": ("Staff scan", "Scan interne"),
}


def pick_language(cookie: str | None, accept_language: str | None) -> Language:
    """``cookie`` when it names a language, else the first of ``fr``/``en`` by preference
    in ``Accept-Language``, else ``en``."""
    if cookie in LANGUAGES:
        return cookie
    for language in preferred_languages(accept_language):
        if language in LANGUAGES:
            return language
    return "en"


class Formatter:
    """Texts and locale formatting for one language."""

    def __init__(self, language: Language) -> None:
        self.language = language
        self.locale = _LOCALES[language]

    def t(self, key: str, **values: object) -> str:
        """The text ``key`` in this language, ``{name}`` placeholders filled."""
        text = TEXTS[key][LANGUAGES.index(self.language)]
        return text.format(**values) if values else text

    def number(self, value: float | int) -> str:
        """A count or ratio with this locale's separators (``1,234`` / ``1 234``)."""
        return format_decimal(value, locale=self.locale)

    def ratio(self, value: float | None) -> str:
        """A ROAS-like ratio with two decimals, or an em dash for None."""
        if value is None:
            return "—"
        return format_decimal(value, format="#,##0.00", locale=self.locale)

    def percent(self, value: float) -> str:
        """``0.0375`` -> ``3.8%`` / ``3,8 %``."""
        return format_percent(value, format="#,##0.0%", locale=self.locale)

    def money(self, amount_minor: int, currency: str) -> str:
        """``amount_minor`` minor units of ``currency`` (ISO 4217), e.g. ``4990 EUR`` ->
        ``€49.90`` / ``49,90 €``."""
        digits = get_currency_precision(currency)
        amount = Decimal(amount_minor).scaleb(-digits)
        return format_currency(amount, currency, locale=self.locale)

    def revenue(self, rows: list[object]) -> str:
        """A list of ``RevenueRead``-like rows (``currency``, ``amount_minor``) joined with
        `` + ``; ``0`` when empty."""
        parts = [
            self.money(int(getattr(r, "amount_minor")), str(getattr(r, "currency")))  # noqa: B009
            for r in rows
        ]
        return " + ".join(parts) if parts else self.number(0)

    def datetime(self, value: dt.datetime | None, tz: str = "UTC") -> str:
        """A date and time in the IANA zone ``tz``, medium format; em dash for None."""
        if value is None:
            return "—"
        return format_datetime(value, format="medium", tzinfo=_zone(tz), locale=self.locale)


def _zone(name: str) -> dt.tzinfo:
    import zoneinfo

    return zoneinfo.ZoneInfo(name)
