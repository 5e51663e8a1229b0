"""Catalog on SQLite, for the embedded archive.

Schema: ``patients``, ``studies``, ``series`` and ``instances`` tables keyed by their UIDs (series by
Study + Series Instance UID, since a series UID reused under another study is a consistency error the
catalog must be able to hold, not hide); level records and instance metadata are DICOM JSON text.
``quarantine`` and ``replacements`` keep what ingest refused and which instances were replaced.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import asdict

from skypacs.adapters.sqlite_db import SqliteDatabase
from skypacs.errors import BackendError
from skypacs.ports import CatalogEntry, DicomJson, InstanceRecord, QuarantineRecord, ReplacementRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    PatientID TEXT PRIMARY KEY,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS studies (
    StudyInstanceUID TEXT PRIMARY KEY,
    PatientID TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    StudyInstanceUID TEXT NOT NULL,
    SeriesInstanceUID TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (StudyInstanceUID, SeriesInstanceUID)
);
CREATE TABLE IF NOT EXISTS instances (
    SOPInstanceUID TEXT PRIMARY KEY,
    StudyInstanceUID TEXT NOT NULL,
    SeriesInstanceUID TEXT NOT NULL,
    SOPClassUID TEXT NOT NULL,
    TransferSyntaxUID TEXT NOT NULL,
    PatientID TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances (StudyInstanceUID, SeriesInstanceUID);
CREATE INDEX IF NOT EXISTS instances_by_patient ON instances (PatientID);
CREATE TABLE IF NOT EXISTS quarantine (
    quarantine_id TEXT PRIMARY KEY,
    original_key TEXT NOT NULL,
    quarantine_key TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    size INTEGER NOT NULL,
    quarantined_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replacements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    SOPInstanceUID TEXT NOT NULL,
    previous_key TEXT NOT NULL,
    previous_etag TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    replaced_at TEXT NOT NULL
);
"""

_INSTANCE_COLUMNS = (
    "StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, SOPClassUID, TransferSyntaxUID, PatientID, "
    "key, size, etag, stored_at, metadata"
)


class SqliteCatalog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.db = SqliteDatabase(path, SCHEMA)

    def get_instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        row = (
            self.db.connection()
            .execute(f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE SOPInstanceUID = ?", (sop_instance_uid,))
            .fetchone()
        )
        return _instance(row) if row else None

    def put_instance(
        self, record: InstanceRecord, *, series: DicomJson, study: DicomJson, patient: DicomJson
    ) -> None:
        failures = self.put_instances([CatalogEntry(record, series, study, patient)])
        if failures:
            raise failures[0]

    def put_instances(self, entries: Sequence[CatalogEntry]) -> dict[int, Exception]:
        """All in one transaction: all written or, when it fails, none (each entry gets the error)."""
        try:
            with self.db.transaction() as connection:
                for entry in entries:
                    self._put(connection, entry.record, entry.series, entry.study, entry.patient)
        except sqlite3.Error as exc:
            error = BackendError(f"cannot catalog {len(entries)} instance(s): {exc}")
            return dict.fromkeys(range(len(entries)), error)
        return {}

    def _put(
        self,
        connection: sqlite3.Connection,
        record: InstanceRecord,
        series: DicomJson,
        study: DicomJson,
        patient: DicomJson,
    ) -> None:
        connection.execute(
            f"INSERT OR REPLACE INTO instances ({_INSTANCE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.StudyInstanceUID,
                record.SeriesInstanceUID,
                record.SOPInstanceUID,
                record.SOPClassUID,
                record.TransferSyntaxUID,
                record.PatientID,
                record.key,
                record.size,
                record.etag,
                record.stored_at,
                json.dumps(record.metadata, separators=(",", ":")),
            ),
        )
        connection.execute(
            "INSERT OR REPLACE INTO series VALUES (?,?,?)",
            (record.StudyInstanceUID, record.SeriesInstanceUID, _dumps(series)),
        )
        connection.execute(
            "INSERT OR REPLACE INTO studies VALUES (?,?,?)",
            (record.StudyInstanceUID, record.PatientID, _dumps(study)),
        )
        connection.execute(
            "INSERT OR REPLACE INTO patients VALUES (?,?)", (record.PatientID, _dumps(patient))
        )

    def delete_instance(self, sop_instance_uid: str) -> None:
        with self.db.transaction() as connection:
            row = connection.execute(
                "SELECT StudyInstanceUID, SeriesInstanceUID, PatientID FROM instances WHERE SOPInstanceUID = ?",
                (sop_instance_uid,),
            ).fetchone()
            if row is None:
                return
            study, series, patient = row
            connection.execute("DELETE FROM instances WHERE SOPInstanceUID = ?", (sop_instance_uid,))
            _delete_if_empty(connection, study, series, patient)

    def list_instances(
        self, study_instance_uid: str, series_instance_uid: str | None = None, *, with_metadata: bool = True
    ) -> Iterator[InstanceRecord]:
        columns = _INSTANCE_COLUMNS if with_metadata else _INSTANCE_COLUMNS.replace("metadata", "'{}' AS metadata")
        sql = f"SELECT {columns} FROM instances WHERE StudyInstanceUID = ?"
        params: tuple[str, ...] = (study_instance_uid,)
        if series_instance_uid is not None:
            sql += " AND SeriesInstanceUID = ?"
            params += (series_instance_uid,)
        sql += " ORDER BY SeriesInstanceUID, SOPInstanceUID"
        for row in self.db.connection().execute(sql, params):
            yield _instance(row)

    def get_study(self, study_instance_uid: str) -> DicomJson | None:
        return self._metadata("SELECT metadata FROM studies WHERE StudyInstanceUID = ?", (study_instance_uid,))

    def get_series(self, study_instance_uid: str, series_instance_uid: str) -> DicomJson | None:
        return self._metadata(
            "SELECT metadata FROM series WHERE StudyInstanceUID = ? AND SeriesInstanceUID = ?",
            (study_instance_uid, series_instance_uid),
        )

    def get_patient(self, patient_id: str) -> DicomJson | None:
        return self._metadata("SELECT metadata FROM patients WHERE PatientID = ?", (patient_id,))

    def add_quarantine(self, record: QuarantineRecord) -> None:
        values = asdict(record)
        with self.db.transaction() as connection:
            connection.execute(
                f"INSERT OR REPLACE INTO quarantine ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )

    def list_quarantine(self) -> list[QuarantineRecord]:
        rows = self.db.connection().execute(
            "SELECT quarantine_id, original_key, quarantine_key, reason, message, size, quarantined_at "
            "FROM quarantine ORDER BY quarantine_id"
        )
        return [QuarantineRecord(*row) for row in rows]

    def add_replacement(self, record: ReplacementRecord) -> None:
        values = asdict(record)
        with self.db.transaction() as connection:
            connection.execute(
                f"INSERT INTO replacements ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )

    def list_replacements(self) -> list[ReplacementRecord]:
        rows = self.db.connection().execute(
            "SELECT SOPInstanceUID, previous_key, previous_etag, key, etag, replaced_at "
            "FROM replacements ORDER BY id"
        )
        return [ReplacementRecord(*row) for row in rows]

    def count_instances(self) -> int:
        return int(self.db.connection().execute("SELECT count(*) FROM instances").fetchone()[0])

    def _metadata(self, sql: str, params: tuple[str, ...]) -> DicomJson | None:
        row = self.db.connection().execute(sql, params).fetchone()
        return json.loads(row[0]) if row else None


def _dumps(metadata: DicomJson) -> str:
    return json.dumps(metadata, separators=(",", ":"))


def _instance(row: sqlite3.Row) -> InstanceRecord:
    values = dict(row)
    values["metadata"] = json.loads(values["metadata"])
    return InstanceRecord(**values)


def _delete_if_empty(connection: sqlite3.Connection, study: str, series: str, patient: str) -> None:
    """Drop series, study and patient records that no instance refers to any more."""
    if not connection.execute(
        "SELECT 1 FROM instances WHERE StudyInstanceUID = ? AND SeriesInstanceUID = ? LIMIT 1", (study, series)
    ).fetchone():
        connection.execute(
            "DELETE FROM series WHERE StudyInstanceUID = ? AND SeriesInstanceUID = ?", (study, series)
        )
    if not connection.execute("SELECT 1 FROM instances WHERE StudyInstanceUID = ? LIMIT 1", (study,)).fetchone():
        connection.execute("DELETE FROM studies WHERE StudyInstanceUID = ?", (study,))
    if not connection.execute("SELECT 1 FROM instances WHERE PatientID = ? LIMIT 1", (patient,)).fetchone():
        connection.execute("DELETE FROM patients WHERE PatientID = ?", (patient,))
