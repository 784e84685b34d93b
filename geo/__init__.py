"""A geospatial toolkit with no knowledge of campaigns (GeoJSON, shapely, PostGIS, IP).

Reads no global settings: every path and parameter is passed in.
"""
