"""DIMSE statuses the gateway answers with, and the one mapping from archive errors to them.

Statuses from PS3.4 B.2.3 (Storage SCP), C.4.1.1.4 (C-FIND), C.4.2.1.5 (C-MOVE), C.4.3.1.4 (C-GET) and
PS3.7 C; the 0xC000-0xCFFF range is "Cannot understand" (Storage) or "Unable to process" (Q/R), within
which 0xC210/0xC211 follow pynetdicom's own usage.
"""

from __future__ import annotations

from enum import IntEnum

from pydicom.dataset import Dataset

from skypacs.errors import (
    BackendError,
    InvalidObject,
    InvalidQuery,
    NotDicom,
    SkyPacsError,
    UnsupportedSOPClass,
)


class Status(IntEnum):
    SUCCESS = 0x0000
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124  # "Refused: Not Authorized", a general status of every DIMSE service (PS3.7 C)
    OUT_OF_RESOURCES = 0xA700
    UNABLE_TO_CALCULATE_NUMBER_OF_MATCHES = 0xA701  # C-MOVE/C-GET: "Refused: Out of resources"
    UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702  # C-MOVE/C-GET: "Refused: Out of resources"
    MOVE_DESTINATION_UNKNOWN = 0xA801
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # the same code, as C-FIND names it
    CANNOT_UNDERSTAND = 0xC000
    UNABLE_TO_PROCESS = 0xC000  # the same code, as C-MOVE/C-GET name it
    CANNOT_DECODE = 0xC210
    PROCESSING_FAILURE = 0xC211
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000  # C-MOVE/C-GET warning
    CANCEL = 0xFE00
    PENDING = 0xFF00


def status_for(error: Exception) -> Status:
    if isinstance(error, UnsupportedSOPClass):
        return Status.SOP_CLASS_NOT_SUPPORTED
    if isinstance(error, InvalidObject) and error.reason == "sop-class-mismatch":
        return Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(error, InvalidQuery):
        return Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(error, NotDicom):
        return Status.CANNOT_DECODE
    if isinstance(error, InvalidObject):
        return Status.CANNOT_UNDERSTAND
    if isinstance(error, BackendError):
        return Status.OUT_OF_RESOURCES
    if isinstance(error, SkyPacsError):
        return Status.PROCESSING_FAILURE
    return Status.OUT_OF_RESOURCES


def retrieve_status_for(error: Exception) -> Status:
    """The status of a C-MOVE/C-GET refused before any sub-operation (PS3.4 C.4.2.1.5, C.4.3.1.4).

    An Identifier that is not a retrieve in the model is 0xA900; a backend that cannot say which
    instances match is "unable to calculate number of matches" (0xA701), the Q/R form of 0xA700;
    any other error is "unable to process".
    """
    if isinstance(error, InvalidQuery):
        return Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(error, BackendError):
        return Status.UNABLE_TO_CALCULATE_NUMBER_OF_MATCHES
    return Status.UNABLE_TO_PROCESS


def status_dataset(status: Status, comment: str | None = None) -> Dataset:
    """A response status with an Error Comment (LO: at most 64 characters, PS3.7 C.4)."""
    response = Dataset()
    response.Status = int(status)
    if comment:
        response.ErrorComment = comment.replace("\\", "/")[:64]
    return response
