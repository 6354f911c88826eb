"""boto3 with HTTP_PROXY pointing at an eliop2p node in passthrough mode.

The client addresses the origin itself and signs for the origin's host; the node,
as its HTTP proxy, relays each request as-is and answers from its cache only after
the origin authorized it. Run by crates/eliop2p/tests/clients.rs. Prints
'N passed, N failed'.
"""
import hashlib
import os
import sys
import tempfile
import traceback

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

ORIGIN = os.environ["ELIOP2P_TEST_ORIGIN"]
BUCKET = os.environ["ELIOP2P_TEST_BUCKET"]
BIG = os.environ["ELIOP2P_TEST_BIG_KEY"]
EXPECTED = os.environ["ELIOP2P_TEST_BIG_SHA256"]


def client(secret):
    return boto3.client(
        "s3",
        endpoint_url=ORIGIN,
        aws_access_key_id=os.environ["ELIOP2P_TEST_ACCESS_KEY"],
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
            proxies={"http": os.environ["ELIOP2P_TEST_PROXY"]},
        ),
    )


good = client(os.environ["ELIOP2P_TEST_SECRET_KEY"])
bad = client("wrong-secret-key-0123456789abcdefgh")


def sha(b):
    return hashlib.sha256(b).hexdigest()


def test_1_get_object_twice_is_byte_exact():
    for _ in range(2):
        body = good.get_object(Bucket=BUCKET, Key=BIG)["Body"].read()
        assert sha(body) == EXPECTED


def test_2_download_file_ranged_parallel():
    cfg = TransferConfig(multipart_threshold=4 * 1024 * 1024, multipart_chunksize=4 * 1024 * 1024, max_concurrency=4)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "obj")
        good.download_file(BUCKET, BIG, path, Config=cfg)
        with open(path, "rb") as f:
            assert sha(f.read()) == EXPECTED


def test_3_wrong_secret_is_denied_after_caching():
    try:
        bad.get_object(Bucket=BUCKET, Key=BIG)["Body"].read()
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e.response
        return
    raise AssertionError("a client with a wrong secret got the object")


def test_4_presigned_url_through_the_proxy():
    import urllib.request
    url = good.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": BIG}, ExpiresIn=600)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": os.environ["ELIOP2P_TEST_PROXY"]}))
    with opener.open(url) as r:
        assert sha(r.read()) == EXPECTED
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    try:
        opener.open(tampered).read()
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
        return
    raise AssertionError("a tampered presigned URL was served")


def main():
    tests = [(k, v) for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
            passed += 1
            print(f"ok   {name}")
        except Exception:
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
