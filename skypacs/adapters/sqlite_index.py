"""QueryIndex on SQLite, for the embedded archive.

Four tables, one per query level, each row a level document in DICOM JSON (``document``) with the
common query keys copied into indexed columns:

- ``instances``: the instance metadata, in index order (``seq``);
- ``series``, ``studies``, ``patients``: the level's attributes from the instance indexed last, plus
  the computed attributes (NumberOf...Related..., ModalitiesInStudy, SOPClassesInStudy), refreshed
  whenever an instance under them is indexed or removed;
- ``study_modalities``: (study, modality) pairs, so ModalitiesInStudy is an indexed match too.

A query runs as an SQL prefilter on the indexed columns it can use (UID lists, exact values, GLOB
wildcards, date ranges), ordered by the level key, then the reference matcher
(:mod:`skypacs.query.matcher`) confirms each candidate. The prefilter only ever narrows to a superset
of the answer, so every attribute, private ones included, is matchable and the answers are exactly the
reference's; the common keys are fast at a million instances, other attributes cost a scan.

``documents_text`` (FTS5) holds every textual value of every attribute for free-text search.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from skypacs.adapters.sqlite_db import SqliteDatabase
from skypacs.model import tag_hex
from skypacs.ports import DicomJson, InstanceRecord
from skypacs.query.attributes import INSTANCE_AVAILABILITY
from skypacs.query.matcher import (
    SearchPage,
    document_matches,
    patient_document,
    series_document,
    shape,
    study_document,
)
from skypacs.query.model import AttributeMatch, Level, Query


@dataclass(frozen=True)
class Column:
    name: str
    keyword: str
    kind: str  # "uid" | "text" | "name" | "date"


def _columns(*spec: tuple[str, str]) -> tuple[Column, ...]:
    return tuple(Column(keyword, keyword, kind) for keyword, kind in spec)


INSTANCE_COLUMNS = _columns(
    ("StudyInstanceUID", "uid"), ("SeriesInstanceUID", "uid"), ("SOPInstanceUID", "uid"), ("SOPClassUID", "uid"),
    ("PatientID", "text"), ("PatientName", "name"), ("StudyDate", "date"), ("AccessionNumber", "text"),
    ("Modality", "text"), ("StudyDescription", "text"),
)
SERIES_COLUMNS = _columns(
    ("StudyInstanceUID", "uid"), ("SeriesInstanceUID", "uid"), ("PatientID", "text"), ("PatientName", "name"),
    ("StudyDate", "date"), ("AccessionNumber", "text"), ("Modality", "text"), ("StudyDescription", "text"),
)
STUDY_COLUMNS = _columns(
    ("StudyInstanceUID", "uid"), ("PatientID", "text"), ("PatientName", "name"), ("StudyDate", "date"),
    ("AccessionNumber", "text"), ("StudyDescription", "text"),
)
PATIENT_COLUMNS = _columns(("PatientID", "text"), ("PatientName", "name"))

TABLES: dict[Level, tuple[str, tuple[Column, ...], tuple[str, ...]]] = {
    Level.IMAGE: ("instances", INSTANCE_COLUMNS, ("SOPInstanceUID",)),
    Level.SERIES: ("series", SERIES_COLUMNS, ("StudyInstanceUID", "SeriesInstanceUID")),
    Level.STUDY: ("studies", STUDY_COLUMNS, ("StudyInstanceUID",)),
    Level.PATIENT: ("patients", PATIENT_COLUMNS, ("PatientID",)),
}


def _table_sql(table: str, columns: tuple[Column, ...], key: tuple[str, ...], extra: str = "") -> str:
    names = ", ".join(f"{c.name} TEXT" for c in columns if c.name not in key)
    keys = ", ".join(f"{k} TEXT NOT NULL" for k in key)
    sql = f"CREATE TABLE IF NOT EXISTS {table} ({keys}, {extra}{names}, has_other_name_groups INTEGER, "
    sql += f"document TEXT NOT NULL, PRIMARY KEY ({', '.join(key)}));\n"
    for column in columns:
        sql += f"CREATE INDEX IF NOT EXISTS {table}_{column.name} ON {table} ({column.name});\n"
    return sql


SCHEMA = (
    _table_sql("instances", INSTANCE_COLUMNS, ("SOPInstanceUID",), "seq INTEGER NOT NULL, ")
    + "CREATE INDEX IF NOT EXISTS instances_series_seq ON instances (StudyInstanceUID, SeriesInstanceUID, seq);\n"
    + "CREATE INDEX IF NOT EXISTS instances_study_seq ON instances (StudyInstanceUID, seq);\n"
    + "CREATE INDEX IF NOT EXISTS instances_patient_seq ON instances (PatientID, seq);\n"
    + _table_sql("series", SERIES_COLUMNS, ("StudyInstanceUID", "SeriesInstanceUID"))
    + _table_sql("studies", STUDY_COLUMNS, ("StudyInstanceUID",))
    + _table_sql("patients", PATIENT_COLUMNS, ("PatientID",))
    + """
CREATE TABLE IF NOT EXISTS study_modalities (
    StudyInstanceUID TEXT NOT NULL, Modality TEXT NOT NULL, PRIMARY KEY (StudyInstanceUID, Modality)
);
CREATE INDEX IF NOT EXISTS study_modalities_modality ON study_modalities (Modality, StudyInstanceUID);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS documents_text USING fts5(
    SOPInstanceUID UNINDEXED, text, tokenize = 'unicode61 remove_diacritics 2'
);
"""
)

MODALITIES_IN_STUDY = tag_hex("ModalitiesInStudy")


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


def _first(doc: DicomJson, keyword: str) -> Any:
    values = (doc.get(tag_hex(keyword)) or {}).get("Value")
    return values[0] if values else None


def _column_value(doc: DicomJson, column: Column) -> str:
    value = _first(doc, column.keyword)
    if value is None:
        return ""  # missing and empty group together, as the reference matcher groups patients
    if column.kind == "name":
        return str(value.get("Alphabetic", "") if isinstance(value, dict) else value).casefold()
    if column.kind == "date":
        return str(value).replace("-", "").replace(".", "")[:8]
    return str(value)


def _other_name_groups(doc: DicomJson) -> int:
    value = _first(doc, "PatientName")
    return int(isinstance(value, dict) and bool(value.get("Ideographic") or value.get("Phonetic")))


def _dumps(doc: DicomJson) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _glob(pattern: str) -> str:
    """A DICOM wildcard pattern as a GLOB pattern ('*' and '?' mean the same; '[' must be escaped)."""
    return pattern.replace("[", "[[]")


class SqliteQueryIndex:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.db = SqliteDatabase(path, SCHEMA)

    # ------------------------------------------------------------------------------- write side

    def index_instance(self, record: InstanceRecord) -> None:
        self.index_instances([record])

    def index_instances(self, records: Sequence[InstanceRecord]) -> None:
        """Index a batch in one transaction, refreshing each affected series, study and patient once:
        the bulk path (imports, re-index, benchmarks), many times faster than one by one."""
        affected: dict[tuple[str, str, str], None] = {}
        with self.db.transaction() as connection:
            (seq,) = connection.execute(
                "INSERT INTO counters VALUES ('seq', 0) ON CONFLICT(name) DO UPDATE SET value = value "
                "RETURNING value"
            ).fetchone()
            for record in records:
                doc = record.metadata
                seq += 1
                previous = connection.execute(
                    "SELECT StudyInstanceUID, SeriesInstanceUID, PatientID FROM instances WHERE SOPInstanceUID = ?",
                    (record.SOPInstanceUID,),
                ).fetchone()
                if previous is not None:
                    affected[tuple(previous)] = None
                    connection.execute("DELETE FROM documents_text WHERE SOPInstanceUID = ?", (record.SOPInstanceUID,))
                self._upsert(connection, "instances", INSTANCE_COLUMNS, doc, {"seq": seq}, document=doc)
                connection.execute(
                    "INSERT INTO documents_text (SOPInstanceUID, text) VALUES (?, ?)",
                    (record.SOPInstanceUID, "\n".join(text_values(doc))),
                )
                group = (
                    str(_first(doc, "StudyInstanceUID")),
                    str(_first(doc, "SeriesInstanceUID")),
                    str(_first(doc, "PatientID") or ""),
                )
                affected[group] = None
            connection.execute("UPDATE counters SET value = ? WHERE name = 'seq'", (seq,))
            self._refresh_all(connection, list(affected))

    def remove_instance(self, sop_instance_uid: str) -> None:
        with self.db.transaction() as connection:
            previous = connection.execute(
                "SELECT StudyInstanceUID, SeriesInstanceUID, PatientID FROM instances WHERE SOPInstanceUID = ?",
                (sop_instance_uid,),
            ).fetchone()
            connection.execute("DELETE FROM instances WHERE SOPInstanceUID = ?", (sop_instance_uid,))
            connection.execute("DELETE FROM documents_text WHERE SOPInstanceUID = ?", (sop_instance_uid,))
            if previous is not None:
                self._refresh_all(connection, [tuple(previous)])

    def get_document(self, sop_instance_uid: str) -> DicomJson | None:
        row = (
            self.db.connection()
            .execute("SELECT document FROM instances WHERE SOPInstanceUID = ?", (sop_instance_uid,))
            .fetchone()
        )
        return json.loads(row[0]) if row else None

    def _upsert(
        self,
        connection: sqlite3.Connection,
        table: str,
        columns: tuple[Column, ...],
        source: DicomJson,
        extra: dict[str, Any],
        *,
        document: DicomJson,
    ) -> None:
        values: dict[str, Any] = {c.name: _column_value(source, c) for c in columns}
        values.update(extra)
        values["has_other_name_groups"] = _other_name_groups(source)
        values["document"] = _dumps(document)
        names = ", ".join(values)
        connection.execute(
            f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({', '.join('?' * len(values))})",
            tuple(values.values()),
        )

    def _refresh_all(self, connection: sqlite3.Connection, groups: list[tuple[str, str, str]]) -> None:
        """Rebuild the series, study and patient documents under which instances came or went: the
        level attributes of the instance indexed last, and the computed attributes by SQL aggregates
        (the same rules as the reference matcher's :func:`level_documents`, without loading members).
        Series first: a study's ModalitiesInStudy is read from its series."""
        for study, series in dict.fromkeys((g[0], g[1]) for g in groups):
            self._refresh_series(connection, study, series)
        for study in dict.fromkeys(g[0] for g in groups):
            self._refresh_study(connection, study)
        for patient in dict.fromkeys(g[2] for g in groups):
            self._refresh_patient(connection, patient)

    def _refresh_series(self, connection: sqlite3.Connection, study: str, series: str) -> None:
        last = self._last(connection, "StudyInstanceUID = ? AND SeriesInstanceUID = ?", (study, series))
        if last is None:
            connection.execute("DELETE FROM series WHERE StudyInstanceUID = ? AND SeriesInstanceUID = ?", (study, series))
        else:
            (count,) = connection.execute(
                "SELECT count(*) FROM instances WHERE StudyInstanceUID = ? AND SeriesInstanceUID = ?", (study, series)
            ).fetchone()
            document = series_document(last, count)
            self._upsert(connection, "series", SERIES_COLUMNS, document, {}, document=document)

    def _refresh_study(self, connection: sqlite3.Connection, study: str) -> None:
        connection.execute("DELETE FROM study_modalities WHERE StudyInstanceUID = ?", (study,))
        last = self._last(connection, "StudyInstanceUID = ?", (study,))
        if last is None:
            connection.execute("DELETE FROM studies WHERE StudyInstanceUID = ?", (study,))
        else:
            modalities = [
                row[0] for row in connection.execute(
                    "SELECT DISTINCT Modality FROM series WHERE StudyInstanceUID = ? AND Modality IS NOT NULL", (study,)
                )
            ]
            sop_classes = [
                row[0] for row in connection.execute(
                    "SELECT DISTINCT SOPClassUID FROM instances WHERE StudyInstanceUID = ?", (study,)
                )
            ]
            series_count, instance_count = connection.execute(
                "SELECT count(DISTINCT SeriesInstanceUID), count(*) FROM instances WHERE StudyInstanceUID = ?", (study,)
            ).fetchone()
            document = study_document(last, modalities, sop_classes, series_count, instance_count)
            self._upsert(connection, "studies", STUDY_COLUMNS, document, {}, document=document)
            connection.executemany(
                "INSERT OR IGNORE INTO study_modalities VALUES (?, ?)", [(study, m) for m in set(modalities)]
            )

    def _refresh_patient(self, connection: sqlite3.Connection, patient: str) -> None:
        last = self._last(connection, "PatientID = ?", (patient,))
        if last is None:
            connection.execute("DELETE FROM patients WHERE PatientID = ?", (patient,))
        else:
            studies, series_count, instances = connection.execute(
                "SELECT count(DISTINCT StudyInstanceUID), count(DISTINCT StudyInstanceUID || '/' || SeriesInstanceUID), "
                "count(*) FROM instances WHERE PatientID = ?",
                (patient,),
            ).fetchone()
            document = patient_document(last, studies, series_count, instances)
            self._upsert(connection, "patients", PATIENT_COLUMNS, document, {}, document=document)

    @staticmethod
    def _last(connection: sqlite3.Connection, where: str, params: tuple[str, ...]) -> DicomJson | None:
        row = connection.execute(
            f"SELECT document FROM instances WHERE {where} ORDER BY seq DESC LIMIT 1", params
        ).fetchone()
        return json.loads(row[0]) if row else None

    # -------------------------------------------------------------------------------- query side

    def search(self, query: Query) -> SearchPage:
        table, columns, key = TABLES[query.level]
        clauses: list[str] = []
        params: list[Any] = []
        by_keyword = {c.keyword: c for c in columns}
        for match in query.matches:
            clause = _prefilter(match, by_keyword, query.fuzzy)
            if clause is not None:
                clauses.append(clause[0])
                params.extend(clause[1])
            if match.tag == MODALITIES_IN_STUDY and query.level == Level.STUDY and _plain_values(match):
                values = match.value.split("\\")
                clauses.append(
                    "StudyInstanceUID IN (SELECT StudyInstanceUID FROM study_modalities "
                    f"WHERE Modality IN ({', '.join('?' * len(values))}))"
                )
                params.extend(values)
        sql = f"SELECT document FROM {table}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY " + ", ".join(key)
        wanted = query.offset + query.limit + 1
        found: list[DicomJson] = []
        for (text,) in self.db.connection().execute(sql, params):
            doc = json.loads(text)
            if query.level == Level.IMAGE:
                doc[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
            if document_matches(query, doc):
                found.append(doc)
                if len(found) >= wanted:
                    break
        window = found[query.offset : query.offset + query.limit]
        return SearchPage([shape(query, doc) for doc in window], len(found) > query.offset + query.limit)

    def search_text(self, text_query: str, limit: int = 100) -> list[str]:
        """SOP Instance UIDs whose attribute values match an FTS5 query (free-text search)."""
        rows = self.db.connection().execute(
            "SELECT SOPInstanceUID FROM documents_text WHERE documents_text MATCH ? LIMIT ?", (text_query, limit)
        )
        return [row[0] for row in rows]


def _plain_values(match: AttributeMatch) -> bool:
    return bool(match.value) and match.value not in ("*", '""') and not any(c in match.value for c in "*?")


def _prefilter(match: AttributeMatch, columns: dict[str, Column], fuzzy: bool) -> tuple[str, list[Any]] | None:
    """An SQL condition that every matching document satisfies (a superset), or None."""
    column = columns.get(match.keyword)
    value = match.value
    if column is None or match.items or value in ("", "*", '""'):
        return None
    if column.kind == "uid":
        uids = value.split("\\")
        return f"{column.name} IN ({', '.join('?' * len(uids))})", uids
    if column.kind == "date":
        if "-" in value:
            low, _, high = value.partition("-")
            parts, args = [], []
            if low:
                parts.append(f"{column.name} >= ?")
                args.append(low.replace(".", "")[:8])
            if high:
                parts.append(f"{column.name} <= ?")
                args.append(high.replace(".", "")[:8])
            return (" AND ".join(parts), args) if parts else None
        return f"{column.name} = ?", [value.replace(".", "")[:8]]
    if column.kind == "name":
        if fuzzy:
            return None  # any component by prefix: the matcher decides
        pattern = value.casefold()
        return f"({column.name} GLOB ? OR has_other_name_groups = 1)", [_glob(pattern)]
    if "\\" in value and match.vr == "CS":
        parts = value.split("\\")
        if any(c in value for c in "*?"):
            return None
        return f"{column.name} IN ({', '.join('?' * len(parts))})", parts
    if any(c in value for c in "*?"):
        return f"{column.name} GLOB ?", [_glob(value)]
    return f"{column.name} = ?", [value]
