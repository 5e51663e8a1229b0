"""A generated archive for query tests: varied names (carets, accents, ideographic groups), dates,
modalities, sequences, private tags, multi-valued attributes, and the queries to run over it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from skypacs.ports import DicomJson, InstanceRecord

FAMILY = ["Smith", "Müller", "Øster", "O'Brien", "van der Berg", "Nguyễn", "Smithers", "Åberg", "Doe", "SMITH", "Li"]
GIVEN = ["John", "Jörg", "Anne-Marie", "Zoë", "Li", "Björn", "Smilla", "José", "Élodie", "Tom"]
MODALITIES = ["CT", "MR", "US", "CR", "SR", "PT"]
DESCRIPTIONS = ["CHEST", "Head w/o contrast", "ABDOMEN^PELVIS", "Knee [left]", "thorax*", "Brain MRI", ""]
SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "SR": "1.2.840.10008.5.1.4.1.1.88.22",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}


def _e(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def generate(instances: int = 2000, seed: int = 7) -> list[InstanceRecord]:
    rng = random.Random(seed)
    records: list[InstanceRecord] = []
    patients = []
    for p in range(max(1, instances // 20)):
        name: dict[str, str] = {"Alphabetic": f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"}
        if rng.random() < 0.1:
            name["Ideographic"] = rng.choice(["山田^太郎", "李^小龍", "김^민준"])
        if rng.random() < 0.05:
            name = {"Alphabetic": rng.choice(FAMILY)}
        patient_id = f"P{p:05d}" if rng.random() > 0.02 else ""
        patients.append((patient_id, name, f"19{rng.randint(30, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                         rng.choice(["M", "F", "O"])))
    study_count = 0
    while len(records) < instances:
        patient_id, name, birth, sex = rng.choice(patients)
        study_count += 1
        study = f"1.2.826.0.1.3680043.10.1.{study_count}"
        study_date = f"{rng.randint(2015, 2026)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        study_time = f"{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
        accession = f"A{rng.randint(0, 99999):05d}" if rng.random() > 0.1 else ""
        description = rng.choice(DESCRIPTIONS)
        for s in range(rng.randint(1, 4)):
            series = f"{study}.{s + 1}"
            modality = rng.choice(MODALITIES)
            for i in range(rng.randint(1, 12)):
                sop = f"{series}.{i + 1}"
                doc: DicomJson = {
                    "00080005": _e("CS", "ISO_IR 192"),
                    "00080008": _e("CS", *rng.sample(["ORIGINAL", "DERIVED", "PRIMARY", "AXIAL"], 2)),
                    "00080016": _e("UI", SOP_CLASSES[modality]),
                    "00080018": _e("UI", sop),
                    "00080020": _e("DA", study_date),
                    "00080030": _e("TM", study_time),
                    "00080050": _e("SH", accession) if accession else _e("SH"),
                    "00080060": _e("CS", modality),
                    "00080090": _e("PN", {"Alphabetic": f"Dr^{rng.choice(GIVEN)}"}),
                    "00081030": _e("LO", description) if description else _e("LO"),
                    "0008103E": _e("LO", f"{modality} series {s + 1}"),
                    "00091010": _e("LO", rng.choice(["SITE-A", "SITE-B", "site-c"])),
                    "00100010": _e("PN", name),
                    "00100020": _e("LO", patient_id) if patient_id else _e("LO"),
                    "00100030": _e("DA", birth),
                    "00100040": _e("CS", sex),
                    "0020000D": _e("UI", study),
                    "0020000E": _e("UI", series),
                    "00200010": _e("SH", str(study_count)),
                    "00200011": _e("IS", s + 1),
                    "00200013": _e("IS", i + 1),
                    "00280010": _e("US", 512),
                    "00280011": _e("US", 512),
                    "00400275": _e("SQ", {
                        "00400009": _e("SH", f"SPS{rng.randint(1, 50)}"),
                        "00401001": _e("SH", f"RP{rng.randint(1, 50)}"),
                    }),
                }
                records.append(InstanceRecord(
                    StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop,
                    SOPClassUID=SOP_CLASSES[modality], TransferSyntaxUID="1.2.840.10008.1.2.1",
                    PatientID=patient_id, key=f"studies/{study}/series/{series}/instances/{sop}.dcm",
                    size=1, etag="x", stored_at="2026-11-25T00:00:00Z", metadata=doc,
                ))
    return records


def _value(record: InstanceRecord, tag: str) -> Any:
    values = record.metadata.get(tag, {}).get("Value")
    return values[0] if values else None


def queries(records: list[InstanceRecord], count: int = 400, seed: int = 11) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(level, QIDO parameters) pairs built from values present in the data, and some that are not."""
    rng = random.Random(seed)
    levels = ["STUDY", "SERIES", "IMAGE", "PATIENT"]
    for n in range(count):
        level = levels[n % 4]
        record = rng.choice(records)
        name = _value(record, "00100010")["Alphabetic"]
        family = name.split("^")[0]
        date = _value(record, "00080020")
        candidates: list[list[tuple[str, str]]] = [
            [("PatientID", _value(record, "00100020") or "P00000")],
            [("PatientName", name)],
            [("PatientName", name.upper())],
            [("PatientName", family[:3] + "*")],
            [("PatientName", "*" + family[-2:] + "*")],
            [("PatientName", family[:2] + "?" + family[3:] + "*")],
            [("PatientName", family[:3].lower()), ("fuzzymatching", "true")],
            [("PatientName", "山田*")],
            [("StudyDate", date)],
            [("StudyDate", f"{date[:4]}0101-{date[:4]}0630")],
            [("StudyDate", f"-{date}")],
            [("StudyDate", f"{date}-")],
            [("StudyTime", "-1200")],
            [("AccessionNumber", _value(record, "00080050") or "A00001")],
            [("AccessionNumber", '""')],
            [("StudyDescription", "*CHEST*")],
            [("StudyDescription", "Knee [left]")],
            [("StudyDescription", "thorax*")],
            [("Modality", _value(record, "00080060"))],
            [("Modality", "CT\\MR")],
            [("ModalitiesInStudy", _value(record, "00080060"))],
            [("ModalitiesInStudy", "US\\PT")],
            [("StudyInstanceUID", record.StudyInstanceUID)],
            [("StudyInstanceUID", f"{record.StudyInstanceUID},1.2.3.4")],
            [("SeriesInstanceUID", record.SeriesInstanceUID)],
            [("SOPInstanceUID", record.SOPInstanceUID)],
            [("00091010", "SITE-*")],
            [("00091010", "site-c")],
            [("SeriesNumber", "2")],
            [("ImageType", "DERIVED")],
            [("PatientSex", "F"), ("PatientBirthDate", "19500101-19791231")],
            [("RequestAttributesSequence.ScheduledProcedureStepID", "SPS1*")],
            [("00400275.00401001", "RP7"), ("00400275.00400009", "SPS*")],
            [("SOPClassesInStudy", SOP_CLASSES["SR"])],
            [],
            [("includefield", "all")],
            [("limit", "7"), ("offset", "3")],
            [("PatientName", "*"), ("limit", "5"), ("offset", str(rng.randint(0, 50)))],
        ]
        params = list(rng.choice(candidates))
        if rng.random() < 0.3:
            params.append(("includefield", rng.choice(["00081030", "PatientAge,StudyID", "all"])))
        if rng.random() < 0.3:
            params.append(("limit", str(rng.randint(1, 40))))
        yield level, params


def check_reindexing_and_removal(index: Any, records: list[InstanceRecord]) -> None:
    """Index one by one, remove every seventh, and compare every level with the reference."""
    from skypacs.query.matcher import reference_search
    from skypacs.query.model import Level, query_from_qido

    for record in records:
        index.index_instance(record)
    removed = records[::7]
    for record in removed:
        index.remove_instance(record.SOPInstanceUID)
    remaining = [r for r in records if r not in removed]
    for level in Level:
        query = query_from_qido(level, [("includefield", "all")])
        assert index.search(query) == reference_search(query, [r.metadata for r in remaining])
