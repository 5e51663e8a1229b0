"""Logging set-up for the CLI and the gateway: plain text for people, JSON lines for machines.

Patient data never reaches a log record from SkyPACS code (messages name UIDs, keys and reasons);
``log_identifiers`` exists for pynetdicom's own identifier logging, which stays off by default.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from pynetdicom import _config as pynetdicom_config

from skypacs.audit import AUDIT_LOGGER, audit_handler


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(*, level: str = "INFO", json_format: bool = False, log_identifiers: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_format else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs every PDU at DEBUG and request identifiers (patient names) unless told not to.
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = log_identifiers
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = log_identifiers
    logging.getLogger("pynetdicom").setLevel(logging.WARNING if level.upper() != "DEBUG" else logging.INFO)
    configure_audit_trail()


def configure_audit_trail() -> None:
    """The audit trail (skypacs.audit) is kept whatever the level: its own handler, JSON lines always
    (on Lambda too, whose root logger drops INFO)."""
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    audit_logger.handlers[:] = [audit_handler()]
    audit_logger.setLevel(logging.INFO)
    audit_logger.propagate = False
