"""The test bed's AWS API: a moto server on loopback, reached as production reaches AWS."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from testbed.moto_server import MotoServer


def test_boto3_reaches_the_loopback_server_through_the_environment(moto_env: MotoServer) -> None:
    s3 = boto3.client("s3")  # endpoint, keys and region from the environment only
    s3.create_bucket(Bucket="dbr-cache")
    s3.put_object(Bucket="dbr-cache", Key="a/b.txt", Body=b"hello")
    assert s3.get_object(Bucket="dbr-cache", Key="a/b.txt")["Body"].read() == b"hello"
    assert s3.meta.endpoint_url == moto_env.endpoint_url


def test_reset_forgets_resources_between_tests(moto_env: MotoServer) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="dbr-cache")
    moto_env.reset()
    assert s3.list_buckets()["Buckets"] == []


def test_redshift_cluster_credentials_are_issued_per_call(moto_env: MotoServer) -> None:
    redshift = boto3.client("redshift")
    redshift.create_cluster(
        ClusterIdentifier="analytics",
        NodeType="ra3.xlplus",
        MasterUsername="admin",
        MasterUserPassword="Admin-pass-1",
    )
    first = redshift.get_cluster_credentials(
        ClusterIdentifier="analytics", DbUser="dbt", AutoCreate=False, DurationSeconds=900
    )
    second = redshift.get_cluster_credentials(
        ClusterIdentifier="analytics", DbUser="dbt", AutoCreate=False, DurationSeconds=900
    )
    assert first["DbUser"] == "IAM:dbt"
    assert first["DbPassword"] != second["DbPassword"]
    with pytest.raises(redshift.exceptions.ClusterNotFoundFault):
        redshift.get_cluster_credentials(ClusterIdentifier="nope", DbUser="dbt")


def test_a_hook_sees_every_answered_action(tmp_path: Path) -> None:
    record = tmp_path / "actions.jsonl"
    with MotoServer(hooks=[("testbed.moto_server:record_to", str(record))]) as server:
        sts = boto3.client(
            "sts",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        assert sts.get_caller_identity()["Account"]
    lines = record.read_text().splitlines()
    assert lines == ['{"action": "GetCallerIdentity", "status": 200}']
