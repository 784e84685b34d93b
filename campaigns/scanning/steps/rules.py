"""Step "rules": the campaign's redirect rules pick the destination (see
:mod:`campaigns.scanning.rules`)."""

from __future__ import annotations

from campaigns.scanning.rules import RuleCache, preferred_language
from campaigns.scanning.steps.base import ScanDraft


class Rules:
    """Sets ``destination``, ``rule_id`` and ``variant`` from the first of the campaign's
    rules matching the scan's country, matched store, OS, device type and language
    (set by the steps before). Only for a live campaign (``outcome == "redirect"``): a
    campaign outside its schedule keeps its fallback URL. Without ``rules``, nothing."""

    name = "rules"

    def __init__(self, rules: RuleCache | None) -> None:
        self.rules = rules

    def __call__(self, draft: ScanDraft, /) -> None:
        resolution = draft.resolution
        if self.rules is None or resolution.outcome != "redirect":
            return
        campaign_id = resolution.campaign.id
        if not self.rules.rules_for(campaign_id):
            return
        rule = self.rules.first_match(
            campaign_id,
            country=draft.country,
            location_id=draft.location_id,
            os=draft.os.lower() if draft.os else None,
            device_type=draft.device_type.lower() if draft.device_type else None,
            language=preferred_language(draft.request.accept_language),
        )
        if rule is not None:
            draft.destination, draft.variant = rule.choose(draft.visitor_id)
            draft.rule_id = rule.id
