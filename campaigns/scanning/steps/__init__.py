"""The scan steps: how a scan is built from its request, in named steps.

Contract of a step:

- It is a callable object with a ``name`` taking a :class:`ScanDraft`. It reads
  ``draft.request`` (the :class:`~campaigns.scanning.request.ScanRequest`: code, prefix,
  channel, method, client address, the headers that matter, query string, time),
  ``draft.resolution`` (tag, campaign, destination) and what earlier steps set, and it
  sets only the draft fields it owns (listed on :class:`ScanDraft`); a new step adds its
  fields to :class:`ScanDraft` and, for a new column, to the record built in
  :mod:`campaigns.scanning.service`.
- It reads in-memory state only (caches kept fresh in the background, given through
  :class:`StepContext`): it must not block, await, do I/O or query the database, and
  must not raise for anything a client can send.
- Steps run in :func:`build_steps` order for every scan that gets a redirect; adding a
  step is one line there, and touches neither the endpoint nor the writer.

Order (DESIGN §5): device and bot -> internal (issue 11) -> visitor -> visitor cookie ->
burst -> geolocation -> NFC verification -> rules.
"""

from __future__ import annotations

from campaigns.scanning.steps.base import ScanDraft, ScanStep, StepContext
from campaigns.scanning.steps.burst import Burst
from campaigns.scanning.steps.cookie import VisitorCookie
from campaigns.scanning.steps.device import BOT_REASONS, DeviceAndBot
from campaigns.scanning.steps.geolocation import Geolocation
from campaigns.scanning.steps.internal import Internal
from campaigns.scanning.steps.nfc import NfcVerification
from campaigns.scanning.steps.rules import Rules
from campaigns.scanning.steps.visitor import Visitor

__all__ = ["BOT_REASONS", "ScanDraft", "ScanStep", "StepContext", "build_steps", "run_steps"]


def build_steps(context: StepContext) -> list[ScanStep]:
    """The scan steps, in order: the one registry of steps."""
    return [
        DeviceAndBot(),
        Internal(context.installers),
        Visitor(context.visitors),
        VisitorCookie(context.cookies),
        Burst(context.limiter),
        Geolocation(context.geoip, context.locations),
        NfcVerification(),
        Rules(context.rules),
    ]


def run_steps(steps: list[ScanStep], draft: ScanDraft) -> ScanDraft:
    """Run ``steps`` on ``draft`` in order; returns the draft."""
    for step in steps:
        step(draft)
    return draft
