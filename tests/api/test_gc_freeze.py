"""The lifespan moves what start-up loaded out of the cyclic garbage collector's sight
(``gc.freeze``), so a full collection while serving does not walk the tag cache and the
parsers' tables (a pause of every request of the process: docs/DECISIONS.md, "Garbage
collection on the scan path")."""

from __future__ import annotations

import gc

from api.app import create_app
from campaigns.settings import Settings


async def test_the_lifespan_freezes_what_start_up_loaded(settings: Settings) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    application = create_app(settings)
    try:
        async with application.router.lifespan_context(application):
            frozen = gc.get_freeze_count()
            assert frozen > 10_000
            # What a collection walks now is what was made since (a small part).
            assert len(gc.get_objects()) < frozen // 2
    finally:
        gc.unfreeze()
