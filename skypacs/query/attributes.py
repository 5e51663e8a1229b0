"""Which attributes a query answers with, per level, and which are computed.

Defaults follow PS3.18 Table 10.6.3-3 (study), 10.6.3-4 (series) and 10.6.3-5 (instance), which
C-FIND answers use too (plus the keys the SCU asked for). RetrieveURL is added by the HTTP edge, which
knows the base URL.
"""

from __future__ import annotations

from skypacs.levels import PATIENT_TAGS, SERIES_TAGS, STUDY_TAGS
from skypacs.model import tag_hex
from skypacs.query.model import Level


def _tags(*keywords: str) -> frozenset[str]:
    return frozenset(tag_hex(keyword) for keyword in keywords)


COMPUTED_STUDY = _tags(
    "ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"
)
COMPUTED_SERIES = _tags("NumberOfSeriesRelatedInstances")
COMPUTED_PATIENT = _tags(
    "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"
)
INSTANCE_AVAILABILITY = tag_hex("InstanceAvailability")

PATIENT_DEFAULTS = _tags(
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
)
STUDY_DEFAULTS = _tags(
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
    "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC", "PatientName", "PatientID",
    "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)
SERIES_DEFAULTS = _tags(
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "StudyInstanceUID",
    "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence",
)
INSTANCE_DEFAULTS = _tags(
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
    "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID",
    "SeriesInstanceUID",
)

DEFAULTS = {
    Level.PATIENT: PATIENT_DEFAULTS,
    Level.STUDY: STUDY_DEFAULTS,
    Level.SERIES: SERIES_DEFAULTS,
    Level.IMAGE: INSTANCE_DEFAULTS,
}

LEVEL_KEY = {
    Level.PATIENT: tag_hex("PatientID"),
    Level.STUDY: tag_hex("StudyInstanceUID"),
    Level.SERIES: tag_hex("SeriesInstanceUID"),
    Level.IMAGE: tag_hex("SOPInstanceUID"),
}

# What a level's document holds, beyond computed attributes: attributes of that level and the levels
# above it (a series query may match on the study's PatientID, PS3.18 relational queries).
LEVEL_TAGS = {
    Level.PATIENT: PATIENT_TAGS,
    Level.STUDY: STUDY_TAGS,
    Level.SERIES: SERIES_TAGS | STUDY_TAGS,
}
