"""Step "visitor cookie": the first-party visitor id (:mod:`campaigns.scanning.cookies`)."""

from __future__ import annotations

import uuid

from campaigns.scanning.cookies import read_cookies
from campaigns.scanning.organizations import CookieSettings
from campaigns.scanning.steps.base import ScanDraft


class VisitorCookie:
    """For an organization with ``visitor_cookie`` on (held in ``settings``), sets
    ``cookie_id`` and ``cookie_action``: the request's valid visitor id, read (no action:
    never extended); else, for a person (no ``bot_reason``) without a refusal cookie, a
    new random id with action ``set`` (consent ``organization``) or no id and action
    ``ask`` (consent ``ask``: the consent page asks first). Organizations without the
    cookie: nothing, one dictionary lookup."""

    name = "visitor cookie"

    def __init__(self, settings: CookieSettings | None) -> None:
        self.settings = settings

    def __call__(self, draft: ScanDraft, /) -> None:
        if self.settings is None:
            return
        mode = self.settings.consent_mode(draft.resolution.campaign.organization_id)
        if mode is None:
            return
        cookie_id, refused = read_cookies(draft.request.cookie)
        if cookie_id is not None:
            draft.cookie_id = cookie_id
            return
        if draft.bot_reason is not None or refused:
            return
        if mode == "organization":
            draft.cookie_id = uuid.uuid4()
            draft.cookie_action = "set"
        else:
            draft.cookie_action = "ask"
