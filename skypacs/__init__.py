"""SkyPACS: a serverless PACS archive with an embedded single-machine mode.

The core (this package) holds the DICOM logic; AWS and embedded deployments differ only in the
adapters plugged behind four ports (see ``skypacs.ports``).
"""

__version__ = "0.1.0"


def _quiet_value_warnings() -> None:
    """pydicom's validation warnings quote the offending value (a patient name, a date of birth) into
    the ``pydicom`` logger; patient data must never reach a log, so the archive reads without them.
    Validation that matters (UIDs, required attributes) is the archive's own (skypacs.parsing)."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE


_quiet_value_warnings()
