"""Which attributes belong to the patient, study and series records.

The catalog keeps one record per patient, study and series, taken from the instances stored under
them, so that study- and series-level answers (QIDO, C-FIND, metadata) need not open every instance.
The lists follow the Patient, Study and Series levels of the Query/Retrieve information model
(PS3.4 C.6.1.1 and C.6.2.1) and the modules those attributes come from (PS3.3 C.7.1.1 Patient,
C.7.2.1 General Study, C.7.2.2 Patient Study, C.7.3.1 General Series, C.7.5.1 General Equipment).
"""

from __future__ import annotations

from skypacs.model import tag_hex

PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "ResponsiblePerson",
    "PatientIdentityRemoved",
    "SpecificCharacterSet",
)

STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyID",
    "ReferringPhysicianName",
    "StudyDescription",
    "ProcedureCodeSequence",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "ReferencedStudySequence",
    "RequestingService",
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
    "TimezoneOffsetFromUTC",
)

SERIES_KEYWORDS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "Laterality",
    "BodyPartExamined",
    "ProtocolName",
    "PerformingPhysicianName",
    "OperatorsName",
    "PatientPosition",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "RequestAttributesSequence",
    "FrameOfReferenceUID",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "StationName",
    "SpecificCharacterSet",
)


def _tags(*groups: tuple[str, ...]) -> frozenset[str]:
    return frozenset(tag_hex(keyword) for group in groups for keyword in group)


PATIENT_TAGS = _tags(PATIENT_KEYWORDS)
# A study record answers study-level queries, which return patient attributes too (PS3.18 Table 10.6.3-3).
STUDY_TAGS = _tags(PATIENT_KEYWORDS, STUDY_KEYWORDS)
SERIES_TAGS = _tags(("StudyInstanceUID",), SERIES_KEYWORDS)
