"""The DIMSE gateway: pynetdicom AE, event handlers and status mapping."""
