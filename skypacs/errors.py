"""One error hierarchy for the whole archive.

Every failure the core can report is one of these types. Edges translate them exactly once: DIMSE
statuses in ``skypacs.dimse.status``, HTTP statuses (later) in the DICOMweb layer, CLI messages in
``skypacs.cli``. Messages never carry patient data: they name UIDs, keys and attribute keywords only.
"""

from __future__ import annotations


class SkyPacsError(Exception):
    """Base of every error the archive raises on purpose."""


class NotFound(SkyPacsError):
    """The object, record or resource does not exist."""


class Conflict(SkyPacsError):
    """The request contradicts what is stored (e.g. a UID already used differently)."""


class InvalidObject(SkyPacsError):
    """The bytes are DICOM-ish but not an instance the archive can accept.

    ``reason`` is a short machine-readable code kept with quarantined objects and shown by the CLI.
    """

    reason = "invalid-object"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class NotDicom(InvalidObject):
    """The bytes cannot be decoded as a DICOM dataset at all (not DICOM, truncated, corrupt)."""

    reason = "cannot-decode"


class MissingAttribute(InvalidObject):
    """A Type 1 attribute the archive keys on is absent or empty."""

    reason = "missing-attribute"


class InvalidUID(InvalidObject):
    """A UID violates PS3.5 9.1 (digits and dots, no leading zeros, at most 64 characters)."""

    reason = "invalid-uid"


class UnsupportedSOPClass(InvalidObject):
    """The SOP Class is not a storage SOP class this archive is configured to accept."""

    reason = "unsupported-sop-class"


class InvalidQuery(SkyPacsError):
    """A query or request parameter cannot be understood."""


class Unauthenticated(SkyPacsError):
    """The caller did not say who it is, or not credibly (no bearer token, an unknown one): HTTP 401,
    which invites it to try again with credentials; :class:`AccessDenied` is for a known caller."""


class AccessDenied(SkyPacsError):
    """The caller (AE title, token) is not allowed to do this."""


class BackendError(SkyPacsError):
    """A storage backend failed (disk full, S3/DynamoDB error); the request may be retried."""


class DocumentsRejected(BackendError):
    """The query index refused some documents of a batch for what they hold (a mapping limit, a value
    it cannot parse) and took the others. Retrying those documents fails the same way until the index
    or the object changes, so the rest of the batch must not fail with them."""

    def __init__(self, message: str, rejected: dict[str, str]) -> None:
        super().__init__(message)
        self.rejected = rejected
        """SOP Instance UID -> why (an error type, never a value: values can be patient data)."""


class CannotTranscode(SkyPacsError):
    """A stored object cannot be given in the requested transfer syntax (no decoder or encoder for it).

    WADO-RS answers 406 (PS3.18 8.7.3.5); a C-MOVE/C-GET sub-operation counts it as a failure.
    """


class DamagedObject(SkyPacsError):
    """A stored object cannot be read back (cut short, undecodable pixel data): a server fault (500),
    logged with the instance's UID so an operator can find it; never served as if complete."""
