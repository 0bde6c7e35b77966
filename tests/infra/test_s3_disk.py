"""The disk-kept S3 server the storage bench runs tansu's S3 engine on: conditional writes as S3
answers them, and every object back after a kill -9."""

import os
import signal
import subprocess
import sys

import pytest

from guardstream.infra.s3_disk import bucket_and_key, object_path, stored_objects
from guardstream.infra.stack import free_port, wait_until


def http_answers(url):
    """Whether anything answers HTTP at ``url`` (an S3 error document is an answer)."""
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@pytest.mark.parametrize("key", ["a", "a/b", "clusters/c/topics/t/partitions/0000000000/watermark.json",
                                 "odd key/with spaces+plus%percent"])
def test_a_key_and_its_file_map_both_ways(tmp_path, key):
    path = object_path(tmp_path, "tansu", key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    assert [(b, k) for b, k, _ in stored_objects(tmp_path)] == [("tansu", key)]


def test_a_key_and_a_folder_of_the_same_name_do_not_collide(tmp_path):
    for key in ("a", "a/b"):
        path = object_path(tmp_path, "tansu", key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())
    assert sorted(k for _, k, _ in stored_objects(tmp_path)) == ["a", "a/b"]


@pytest.mark.parametrize("path, expected", [("/tansu/a/b", ("tansu", "a/b")), ("/tansu", ("tansu", "")),
                                            ("/tansu/", ("tansu", "")), ("/tansu/x%20y?uploads", ("tansu", "x y"))])
def test_bucket_and_key_of_a_path_style_request(path, expected):
    assert bucket_and_key(path) == expected


def _serve(directory, port):
    return subprocess.Popen([sys.executable, "-m", "guardstream.infra.s3_disk", "--dir", str(directory),
                             "--port", str(port), "--bucket", "tansu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_conditional_writes_hold_and_every_object_survives_a_kill(tmp_path):
    import boto3  # with moto[server], of the test extra
    from botocore.exceptions import ClientError
    port = free_port()
    server = _serve(tmp_path / "s3", port)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_answers(endpoint), 60, "the S3 server")
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="k",
                          region_name="us-east-1")
        first = s3.put_object(Bucket="tansu", Key="w", Body=b"1", IfNoneMatch="*")["ETag"]
        with pytest.raises(ClientError):
            s3.put_object(Bucket="tansu", Key="w", Body=b"2", IfNoneMatch="*")  # exists already
        with pytest.raises(ClientError):
            s3.put_object(Bucket="tansu", Key="w", Body=b"2", IfMatch='"0"')  # not its ETag
        second = s3.put_object(Bucket="tansu", Key="w", Body=b"3", IfMatch=first)["ETag"]
        s3.put_object(Bucket="tansu", Key="gone", Body=b"x")
        s3.delete_object(Bucket="tansu", Key="gone")
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    server = _serve(tmp_path / "s3", port)
    try:
        wait_until(lambda: http_answers(endpoint), 60, "the S3 server, again")
        kept = s3.get_object(Bucket="tansu", Key="w")
        assert (kept["Body"].read(), kept["ETag"]) == (b"3", second)  # the same ETag: If-Match goes on
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="tansu").get("Contents", [])] == ["w"]
    finally:
        server.terminate()
        server.wait(10)
