"""The object store's identities, enforced by a real SeaweedFS gateway: each job may do its job and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from stack import seaweedfs

pytestmark = [pytest.mark.integration]

# One key under every area a job might touch, and what each verb does there.
AREAS = ("landing/x.csv", "warehouse/raw/flights/data/x.parquet", "warehouse/other/t/x.parquet", "features/x.json")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[seaweedfs.Cluster]:
    with seaweedfs.running(tmp_path_factory.mktemp("identities")) as cluster:
        admin = _client(cluster, seaweedfs.ADMIN)
        for key in AREAS:
            admin.put_object(Bucket="lab", Key=key, Body=b"seed")
        admin.put_object(Bucket="mlflow", Key="1/artifacts/MLmodel", Body=b"seed")
        yield cluster


def _client(cluster: seaweedfs.Cluster, identity: str) -> Any:
    return seaweedfs.client(cluster.endpoint, identity, cluster.secrets[seaweedfs.secret_variable(identity)])


def _code(call: Callable[[], object]) -> str:
    """'ok', or the gateway's error code."""
    try:
        call()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "ok"


@pytest.mark.parametrize("identity", seaweedfs.IDENTITIES)
def test_every_job_may_do_exactly_what_its_actions_say(cluster: seaweedfs.Cluster, identity: str) -> None:
    s3 = _client(cluster, identity)
    checked = []
    for bucket, key in [*(("lab", key) for key in AREAS), ("mlflow", "1/artifacts/MLmodel")]:
        read = _code(lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read())  # noqa: B023
        probe = f"{key}.{uuid.uuid4().hex}"
        write = _code(lambda: s3.put_object(Bucket=bucket, Key=probe, Body=b"x"))  # noqa: B023
        for verb, code in (("Read", read), ("Write", write)):
            expected = "ok" if seaweedfs.allows(identity, verb, bucket, key) else "AccessDenied"
            assert code == expected, f"{identity} {verb} {bucket}/{key}: {code}"
            checked.append(code)
    assert "ok" in checked and "AccessDenied" in checked  # each identity both does its job and is refused


def test_the_jobs_the_issue_names_are_refused_where_it_says(cluster: seaweedfs.Cluster) -> None:
    serve, ingest = _client(cluster, "serve"), _client(cluster, "ingest")
    assert _code(lambda: serve.get_object(Bucket="lab", Key="features/x.json")) == "ok"
    assert _code(lambda: serve.get_object(Bucket="lab", Key=AREAS[1])) == "AccessDenied"
    assert _code(lambda: serve.put_object(Bucket="lab", Key="features/forged.json", Body=b"")) == "AccessDenied"
    assert _code(lambda: ingest.get_object(Bucket="mlflow", Key="1/artifacts/MLmodel")) == "AccessDenied"
    assert _code(lambda: ingest.put_object(Bucket="lab", Key="landing/new.csv", Body=b"")) == "ok"
    assert _code(lambda: _client(cluster, "pipeline").create_bucket(Bucket="stolen")) == "AccessDenied"


def test_no_keys_wrong_keys_and_unknown_keys_are_refused(cluster: seaweedfs.Cluster) -> None:
    anonymous = boto3.client(
        "s3", endpoint_url=cluster.endpoint, region_name="us-east-1", config=Config(signature_version=UNSIGNED)
    )
    assert _code(lambda: anonymous.get_object(Bucket="lab", Key="features/x.json")) == "AccessDenied"
    wrong = seaweedfs.client(cluster.endpoint, "serve", "not-the-secret")
    assert _code(lambda: wrong.get_object(Bucket="lab", Key="features/x.json")) == "SignatureDoesNotMatch"
    unknown = seaweedfs.client(cluster.endpoint, "nobody", "x" * 32)
    assert _code(lambda: unknown.get_object(Bucket="lab", Key="features/x.json")) == "InvalidAccessKeyId"


def test_the_identities_file_is_private_and_holds_every_job(cluster: seaweedfs.Cluster) -> None:
    assert cluster.config.stat().st_mode & 0o777 == 0o600
    names = {entry["name"] for entry in seaweedfs.identities(cluster.secrets)["identities"]}
    assert names == {seaweedfs.ADMIN, *seaweedfs.IDENTITIES}
    assert isinstance(cluster.config, Path)
