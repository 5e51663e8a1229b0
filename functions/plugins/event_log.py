"""Example plugin: logs each archive event it receives, by type and UIDs only.

A template for new plugins and the proof that the wiring works (a stored instance shows up in this
function's log). The handler is one thin edge, as everywhere: parse the EventBridge event, build the log
record, log it.

Only the event type and the detail's UID attributes are logged, and only values with UID syntax
(PS3.5 9.1): the detail today holds UIDs, the object key, size and outcome, but it may grow to carry
patient data (PatientName, PatientID...), and patient data is never logged (STYLE.md 10). An allow-list
keeps that true whatever is added to the detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from skypacs.uids import is_valid_uid

logger = Logger(service="skypacs-plugin-event-log")

#: Detail attributes that may be logged: the UIDs the archive publishes (``skypacs.services``).
LOGGED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def log_record(event: Mapping[str, Any]) -> dict[str, Any]:
    """What is logged for one EventBridge event: its type and source, and the detail's valid UIDs."""
    detail = event.get("detail")
    detail = detail if isinstance(detail, Mapping) else {}
    record: dict[str, Any] = {"detail_type": event.get("detail-type"), "source": event.get("source")}
    for keyword in LOGGED_UIDS:
        value = detail.get(keyword)
        if isinstance(value, str) and is_valid_uid(value):
            record[keyword] = value
    return record


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    record = log_record(event)
    logger.info("archive event", extra=record)
    return record
