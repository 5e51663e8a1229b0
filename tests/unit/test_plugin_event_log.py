"""The example plugin: an EventBridge archive event in, one JSON log line out with the type and UIDs only."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pytest

from functions.plugins import event_log

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
SOP = "1.2.826.0.1.3680043.8.498.3"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def eventbridge_event(detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
    """An event as EventBridge delivers it to a Lambda target (detail as ``EventBridgeEventBus`` sends)."""
    return {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": detail_type,
        "source": "skypacs",
        "account": "123456789012",
        "time": "2026-12-04T05:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": detail,
    }


STORED = eventbridge_event(
    "InstanceStored",
    {
        "StudyInstanceUID": STUDY,
        "SeriesInstanceUID": SERIES,
        "SOPInstanceUID": SOP,
        "SOPClassUID": CT_IMAGE_STORAGE,
        "key": f"studies/{STUDY}/series/{SERIES}/instances/{SOP}.dcm",
        "size": 525_312,
        "outcome": "stored",
    },
)


@dataclass
class FakeContext:
    function_name: str = "skypacs-plugin-event-log"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:skypacs-plugin-event-log"
    aws_request_id: str = "52fdfc07-2182-454f-963f-5f0f9a621d72"


def run(event: dict[str, Any]) -> tuple[dict[str, Any], str]:
    stream = io.StringIO()
    handler = event_log.logger.registered_handler
    previous = handler.setStream(stream)
    try:
        result = event_log.handler(event, FakeContext())  # type: ignore[arg-type]
    finally:
        handler.setStream(previous)
    return result, stream.getvalue()


def test_logs_type_and_uids_with_event_id_as_correlation_id() -> None:
    result, output = run(STORED)
    (line,) = [json.loads(x) for x in output.splitlines() if x.strip()]
    assert line["message"] == "archive event"
    assert line["level"] == "INFO"
    assert line["correlation_id"] == STORED["id"]
    assert line["service"] == "skypacs-plugin-event-log"
    assert {
        k: line[k]
        for k in (
            "detail_type",
            "source",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "SOPClassUID",
        )
    } == {
        "detail_type": "InstanceStored",
        "source": "skypacs",
        "StudyInstanceUID": STUDY,
        "SeriesInstanceUID": SERIES,
        "SOPInstanceUID": SOP,
        "SOPClassUID": CT_IMAGE_STORAGE,
    }
    assert result == {k: line[k] for k in result}


def test_patient_data_and_other_detail_never_logged() -> None:
    detail = dict(STORED["detail"], PatientName="Doe^Jane", PatientID="PAT-4711", PatientBirthDate="19700101")
    _, output = run(eventbridge_event("InstanceStored", detail))
    for secret in ("Doe^Jane", "PAT-4711", "19700101", "PatientName", "PatientID", "studies/", "525312"):
        assert secret not in output


def test_values_without_uid_syntax_are_not_logged() -> None:
    # A UID attribute is only logged when it is a UID: a misfilled field cannot leak a name.
    detail = {"StudyInstanceUID": "Doe^Jane", "SeriesInstanceUID": 42, "SOPInstanceUID": SOP}
    record = event_log.log_record(eventbridge_event("InstanceDeleted", detail))
    assert record == {"detail_type": "InstanceDeleted", "source": "skypacs", "SOPInstanceUID": SOP}


@pytest.mark.parametrize("detail", [None, "not an object", []])
def test_event_without_detail_object_is_logged_by_type(detail: Any) -> None:
    event = eventbridge_event("StudyChanged", {})
    event["detail"] = detail
    result, output = run(event)
    assert result == {"detail_type": "StudyChanged", "source": "skypacs"}
    assert "StudyChanged" in output
