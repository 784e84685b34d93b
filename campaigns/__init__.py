"""Passerelle's domain: campaigns, tags, scans, conversions and attribution.

Never imports FastAPI: HTTP lives in :mod:`api`.
"""
