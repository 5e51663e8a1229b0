"""The AWS gateway path under moto: DCMTK C-STORE into S3, refused transfers quarantined in the bucket
and recorded in DynamoDB; the indexer Lambda (tests/integration/test_indexer_lambda.py) does the rest."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import boto3
import pydicom
import pytest
from moto import mock_aws

from skypacs.adapters.dynamodb_catalog import create_catalog_table
from skypacs.aws import AwsArchive
from skypacs.config import ENV_BUCKET, ENV_CATALOG_TABLE
from skypacs.dimse.server import Gateway, GatewayOptions
from skypacs.dimse.status import Status
from tests.conftest import copy_testdata, run_dcmtk
from tests.dicom_files import identity, split_part10, store_files
from tests.integration.test_dimse_bad_input import dataset_bytes, part10


@pytest.fixture
def aws_gateway(fake_aws_credentials: None) -> Iterator[tuple[Gateway, AwsArchive]]:
    with mock_aws():
        s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
        s3.create_bucket(Bucket="objects")
        create_catalog_table(dynamodb, "catalog")
        archive = AwsArchive(
            environ={ENV_BUCKET: "objects", ENV_CATALOG_TABLE: "catalog"}, s3_client=s3, dynamodb_client=dynamodb
        )
        gateway = Gateway(GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0), archive.store_service)
        gateway.start()
        try:
            yield gateway, archive
        finally:
            gateway.stop(timeout=5)


def test_storescu_into_s3_exactly_as_received(aws_gateway: tuple[Gateway, AwsArchive], tmp_path: Path) -> None:
    gateway, archive = aws_gateway
    paths = copy_testdata(["CT_small.dcm", "JPEG2000.dcm"], tmp_path)
    for path, flag in zip(paths, ["-x=", "-xw"]):
        result = run_dcmtk("storescu", flag, "-R", "-aec", "SKYPACS", "127.0.0.1", str(gateway.port), str(path))
        assert result.returncode == 0, result.stderr
    for path in paths:
        study, series, sop, _ = identity(path)
        key = f"studies/{study}/series/{series}/instances/{sop}.dcm"
        with archive.store.open(key) as stream:
            stored = pydicom.dcmread(io.BytesIO(stream.read()))
        original = pydicom.dcmread(path)
        assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert stored.PixelData == original.PixelData  # as sent: no transcoding
    assert archive.catalog.list_quarantine() == []


def test_refused_transfer_is_quarantined_in_the_bucket(aws_gateway: tuple[Gateway, AwsArchive], tmp_path: Path) -> None:
    gateway, archive = aws_gateway
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(part10(dataset_bytes(SOPInstanceUID="1.2.3.4.5.6.7", StudyInstanceUID="1.2.abc")[0]))
    assert store_files(gateway.port, [bad]) == [Status.CANNOT_UNDERSTAND]
    (record,) = archive.catalog.list_quarantine()
    assert record.reason == "invalid-uid" and record.quarantine_key.startswith("quarantine/")
    with archive.store.open(record.quarantine_key) as stream:
        kept = stream.read()
    assert split_part10(kept)[1] == split_part10(bad.read_bytes())[1]  # the refused dataset, whole


def test_gateway_task_answers_c_find_and_c_get_from_the_index(fake_aws_credentials: None, tmp_path: Path) -> None:
    # The gateway task as `skypacs gateway` composes it (AwsArchive.gateway). OpenSearch cannot run here,
    # so the archive's QueryIndex is the SQLite adapter, which passes the same contract suite.
    from skypacs.adapters.sqlite_index import SqliteQueryIndex
    from tests.integration.test_dimse_find import findscu

    with mock_aws():
        s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
        s3.create_bucket(Bucket="objects")
        create_catalog_table(dynamodb, "catalog")
        archive = AwsArchive(environ={ENV_BUCKET: "objects", ENV_CATALOG_TABLE: "catalog"},
                             s3_client=s3, dynamodb_client=dynamodb)
        archive.__dict__["index"] = SqliteQueryIndex(tmp_path / "index.sqlite")
        stored = []
        for path in copy_testdata(["CT_small.dcm", "MR_small.dcm"], tmp_path / "in"):
            receipt = archive.store_service.store_part10(path.read_bytes())
            archive.ingest_service.ingest(receipt.info.key, etag=receipt.info.etag, size=receipt.info.size)
            stored.append(pydicom.dcmread(path, stop_before_pixels=True))
        gateway = archive.gateway(GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0))
        gateway.start()
        try:
            answers, _ = findscu(gateway.port, tmp_path / "find", "-S", "-k", "QueryRetrieveLevel=STUDY",
                                 "-k", "StudyInstanceUID", "-k", "ModalitiesInStudy")
            assert {a.StudyInstanceUID for a in answers} == {d.StudyInstanceUID for d in stored}
            ct = stored[0]
            (tmp_path / "get").mkdir()
            result = run_dcmtk("getscu", "-S", "-aet", "GETSCU", "-aec", "SKYPACS", "-od", str(tmp_path / "get"),
                               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct.StudyInstanceUID}",
                               "127.0.0.1", str(gateway.port))
            assert result.returncode == 0, result.stderr
            (received,) = list((tmp_path / "get").iterdir())
            assert pydicom.dcmread(received).SOPInstanceUID == ct.SOPInstanceUID
        finally:
            gateway.stop(timeout=5)
