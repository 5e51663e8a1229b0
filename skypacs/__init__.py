"""SkyPACS: a serverless PACS archive with an embedded single-machine mode.

The core (this package) holds the DICOM logic; AWS and embedded deployments differ only in the
adapters plugged behind four ports (see ``skypacs.ports``).
"""

__version__ = "0.1.0"
