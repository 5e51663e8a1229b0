"""The pixel layer of retrieval: frames located in stored bytes (``frames``), transfer syntax changes
(``transcode``), rendered images (``render``) and the PS3.18 media type tables (``media_types``).

Ingest never imports this package: it never decodes pixels.
"""
