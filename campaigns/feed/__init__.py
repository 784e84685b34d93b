"""The live feed of scans and conversions (``GET /v1/campaigns/{id}/events``).

:mod:`~campaigns.feed.cursor`: snapshots as cursors and event ids;
:mod:`~campaigns.feed.store`: the ``feed_batches`` rows and the queries reading them;
:mod:`~campaigns.feed.hub`: the per-process hub serving the streams.
"""
