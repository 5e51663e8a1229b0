"""QueryIndex on SQLite (write side), for the embedded archive.

Each instance is one row of ``documents`` holding its DICOM JSON, with the common query keys copied
into indexed columns (so that study lists and patient look-ups stay fast at a million instances), and
one row of the FTS5 table ``documents_text`` holding every textual value of every attribute, private
ones included, for Dicoogle-style free-text search. The query side arrives with the query model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from skypacs.adapters.sqlite_db import SqliteDatabase
from skypacs.model import first_value
from skypacs.ports import DicomJson, InstanceRecord

KEY_COLUMNS = (
    "PatientID",
    "PatientName",
    "StudyDate",
    "AccessionNumber",
    "StudyInstanceUID",
    "Modality",
    "SeriesInstanceUID",
    "SOPClassUID",
    "StudyDescription",
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS documents (
    SOPInstanceUID TEXT PRIMARY KEY,
    {", ".join(f"{column} TEXT" for column in KEY_COLUMNS)},
    document TEXT NOT NULL
);
{"".join(f"CREATE INDEX IF NOT EXISTS documents_{c} ON documents ({c});" for c in KEY_COLUMNS)}
CREATE VIRTUAL TABLE IF NOT EXISTS documents_text USING fts5(
    SOPInstanceUID UNINDEXED, text, tokenize = 'unicode61 remove_diacritics 2'
);
"""


def text_values(metadata: DicomJson) -> Iterator[str]:
    """Every textual value in a DICOM JSON dataset, sequences included, for free-text search."""
    for element in metadata.values():
        for value in element.get("Value", ()):
            yield from _texts(value)


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)):
        yield str(value)
    elif isinstance(value, dict):
        if "Alphabetic" in value or "Ideographic" in value or "Phonetic" in value:
            for group in ("Alphabetic", "Ideographic", "Phonetic"):
                if value.get(group):
                    yield str(value[group]).replace("^", " ")
        else:
            yield from text_values(value)


class SqliteQueryIndex:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.db = SqliteDatabase(path, SCHEMA)

    def index_instance(self, record: InstanceRecord) -> None:
        metadata = record.metadata
        keys = [_key_value(metadata, column, record) for column in KEY_COLUMNS]
        with self.db.transaction() as connection:
            connection.execute(
                f"INSERT OR REPLACE INTO documents (SOPInstanceUID, {', '.join(KEY_COLUMNS)}, document) "
                f"VALUES (?, {', '.join('?' * len(KEY_COLUMNS))}, ?)",
                (record.SOPInstanceUID, *keys, json.dumps(metadata, separators=(",", ":"))),
            )
            connection.execute("DELETE FROM documents_text WHERE SOPInstanceUID = ?", (record.SOPInstanceUID,))
            connection.execute(
                "INSERT INTO documents_text (SOPInstanceUID, text) VALUES (?, ?)",
                (record.SOPInstanceUID, "\n".join(text_values(metadata))),
            )

    def remove_instance(self, sop_instance_uid: str) -> None:
        with self.db.transaction() as connection:
            connection.execute("DELETE FROM documents WHERE SOPInstanceUID = ?", (sop_instance_uid,))
            connection.execute("DELETE FROM documents_text WHERE SOPInstanceUID = ?", (sop_instance_uid,))

    def get_document(self, sop_instance_uid: str) -> DicomJson | None:
        row = (
            self.db.connection()
            .execute("SELECT document FROM documents WHERE SOPInstanceUID = ?", (sop_instance_uid,))
            .fetchone()
        )
        return json.loads(row[0]) if row else None

    def search_text(self, query: str, limit: int = 100) -> list[str]:
        """SOP Instance UIDs whose attribute values match an FTS5 query (free-text search)."""
        rows = self.db.connection().execute(
            "SELECT SOPInstanceUID FROM documents_text WHERE documents_text MATCH ? LIMIT ?", (query, limit)
        )
        return [row[0] for row in rows]


def _key_value(metadata: DicomJson, column: str, record: InstanceRecord) -> str | None:
    value = getattr(record, column, None) or first_value(metadata, column)
    return None if value is None else str(value)
