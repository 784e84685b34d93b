"""Webhooks: signed events sent to the organization's endpoints from a durable outbox.

- :mod:`~campaigns.webhooks.signing`: the signature (``Passerelle-Signature``) and the
  signing secrets.
- :mod:`~campaigns.webhooks.addresses`: which URLs and addresses may be called (SSRF).
- :mod:`~campaigns.webhooks.outbox`: the rows written with the events' transactions.
- :mod:`~campaigns.webhooks.delivery`: the dispatcher sending them, with retries.
"""
