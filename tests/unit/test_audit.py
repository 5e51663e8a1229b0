"""The audit record: one JSON object per line, with who, what, when and the outcome, and never a token
or a value a patient could be recognised by."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from skypacs.audit import AUDIT_LOGGER, audit, bearer_token, dimse_outcome, token_id
from skypacs.logs import configure_logging

TOKEN = "s3cr3t-token-that-nobody-may-read-in-a-log"


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuditRecords]:
    """The audit records, caught on the audit logger itself (it may not propagate), once each."""
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    monkeypatch.setattr(audit_logger, "propagate", False)
    audit_logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    try:
        yield AuditRecords(caplog)
    finally:
        audit_logger.removeHandler(caplog.handler)


class AuditRecords:
    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(r.getMessage()) for r in self.caplog.records if r.name == AUDIT_LOGGER]


def test_a_record_is_one_json_object_with_who_what_when_and_outcome(records: AuditRecords) -> None:
    audit("query", who=token_id(TOKEN), what={"route": "qido-studies", "parameters": ["PatientName"]},
          outcome="success", protocol="DICOMweb", status=200, address="127.0.0.1")

    [entry] = records.entries()
    assert entry["action"] == "query"
    assert entry["protocol"] == "DICOMweb"
    assert entry["who"] == token_id(TOKEN)
    assert entry["what"] == {"route": "qido-studies", "parameters": ["PatientName"]}
    assert entry["outcome"] == "success" and entry["status"] == 200 and entry["address"] == "127.0.0.1"
    assert datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert "\n" not in records.caplog.records[-1].getMessage()
    assert TOKEN not in records.caplog.text


def test_a_token_is_named_by_a_digest_never_itself() -> None:
    identifier = token_id(TOKEN)
    assert len(identifier) == 8 and int(identifier, 16) >= 0
    assert identifier not in TOKEN and identifier != token_id(TOKEN + "x")
    assert token_id(None) == token_id("") == "anonymous"
    assert bearer_token(f"Bearer {TOKEN}") == TOKEN
    assert bearer_token(f"Basic {TOKEN}") is None and bearer_token(None) is None


def test_dimse_statuses_are_hex_and_classified() -> None:
    assert dimse_outcome(0x0000) == ("0x0000", "success")
    assert dimse_outcome(0xB000) == ("0xB000", "success")
    assert dimse_outcome(0xA700) == ("0xA700", "failure")
    assert dimse_outcome(0xC210) == ("0xC210", "failure")


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown audit action"):
        audit("look", who="x", what={}, outcome="success", protocol="DIMSE")


def test_the_trail_is_kept_at_warning_level_and_is_json_without_log_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, audit_logger = logging.getLogger(), logging.getLogger(AUDIT_LOGGER)
    saved = (root.handlers[:], root.level, audit_logger.handlers[:], audit_logger.level, audit_logger.propagate)
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    try:
        configure_logging(level="WARNING", json_format=False)
        logging.getLogger("skypacs.test").info("ordinary information")
        audit("store", who="MODALITY", what={"SOPInstanceUID": "1.2.3"}, outcome="success", protocol="DIMSE",
              status="0x0000")
    finally:
        root.handlers[:], audit_logger.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        audit_logger.setLevel(saved[3])
        audit_logger.propagate = saved[4]
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1  # the audit record, once: not the INFO line, not twice through the root
    entry = json.loads(lines[0])
    assert entry["action"] == "store" and entry["who"] == "MODALITY" and entry["what"]["SOPInstanceUID"] == "1.2.3"
