"""Real boto3 against an eliop2p node, compared byte for byte with the origin.

Run by crates/eliop2p/tests/clients.rs, which starts a SigV4-checking origin and a
node and passes their endpoints in the environment. Prints 'N passed, N failed'.
"""
import hashlib
import os
import sys
import tempfile
import traceback

import boto3
from botocore.config import Config

NODE = os.environ["ELIOP2P_TEST_NODE"]
ORIGIN = os.environ["ELIOP2P_TEST_ORIGIN"]
BUCKET = os.environ["ELIOP2P_TEST_BUCKET"]
BIG = os.environ["ELIOP2P_TEST_BIG_KEY"]
SMALL = os.environ["ELIOP2P_TEST_SMALL_KEY"]


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ["ELIOP2P_TEST_ACCESS_KEY"],
        aws_secret_access_key=os.environ["ELIOP2P_TEST_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


node = client(NODE)
origin = client(ORIGIN)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def test_get_object_whole_is_byte_exact():
    for key in (BIG, SMALL):
        want = origin.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        got = node.get_object(Bucket=BUCKET, Key=key)
        body = got["Body"].read()
        assert sha(body) == sha(want), key
        assert got["ContentLength"] == len(want)
        again = node.get_object(Bucket=BUCKET, Key=key)
        assert again["ResponseMetadata"]["HTTPHeaders"]["x-cache"] == "HIT"
        assert sha(again["Body"].read()) == sha(want)


def test_get_object_ranges():
    want = origin.get_object(Bucket=BUCKET, Key=BIG)["Body"].read()
    n = len(want)
    for rng, (a, b) in {
        "bytes=0-0": (0, 1),
        "bytes=100-199": (100, 200),
        f"bytes={(1 << 20) - 7}-{(1 << 20) + 7}": ((1 << 20) - 7, (1 << 20) + 8),
        f"bytes={n - 10}-": (n - 10, n),
        "bytes=-4096": (n - 4096, n),
    }.items():
        got = node.get_object(Bucket=BUCKET, Key=BIG, Range=rng)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, rng
        assert got["Body"].read() == want[a:b], rng
        assert got["ContentRange"] == f"bytes {a}-{b - 1}/{n}", got["ContentRange"]


def test_head_object_matches_origin():
    for key in (BIG, SMALL):
        o = origin.head_object(Bucket=BUCKET, Key=key)
        n = node.head_object(Bucket=BUCKET, Key=key)
        assert n["ContentLength"] == o["ContentLength"]
        assert n["ETag"] == o["ETag"]
        assert n.get("ContentType") == o.get("ContentType"), (n.get("ContentType"), o.get("ContentType"))
        assert n["LastModified"] == o["LastModified"]


def test_missing_key_is_the_origins_404():
    try:
        node.get_object(Bucket=BUCKET, Key="does/not/exist")
    except node.exceptions.NoSuchKey:
        return
    raise AssertionError("expected NoSuchKey")


def test_list_objects_v2_matches_origin():
    o = sorted(x["Key"] for x in origin.list_objects_v2(Bucket=BUCKET)["Contents"])
    n = sorted(x["Key"] for x in node.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert o == n and BIG in n, (o, n)


def test_put_then_get_through_node():
    data = os.urandom(3 * 1024 * 1024 + 11)
    node.put_object(Bucket=BUCKET, Key="uploads/put via node.bin", Body=data)
    assert node.get_object(Bucket=BUCKET, Key="uploads/put via node.bin")["Body"].read() == data
    assert origin.get_object(Bucket=BUCKET, Key="uploads/put via node.bin")["Body"].read() == data
    # Overwrite through the node: the next read is the new version at once.
    data2 = os.urandom(1024)
    node.put_object(Bucket=BUCKET, Key="uploads/put via node.bin", Body=data2)
    assert node.get_object(Bucket=BUCKET, Key="uploads/put via node.bin")["Body"].read() == data2


def test_download_file_parallel_ranged():
    want = origin.get_object(Bucket=BUCKET, Key=BIG)["Body"].read()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big")
        node.download_file(BUCKET, BIG, path)
        with open(path, "rb") as f:
            assert sha(f.read()) == sha(want)


def test_multipart_upload_through_node():
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(12 * 1024 * 1024 + 5)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "up")
        with open(path, "wb") as f:
            f.write(data)
        cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
        node.upload_file(path, BUCKET, "uploads/multipart.bin", Config=cfg)
    assert sha(node.get_object(Bucket=BUCKET, Key="uploads/multipart.bin")["Body"].read()) == sha(data)


def test_checksums_reach_clients_that_validate():
    # botocore validates a GET's body against x-amz-checksum-* when it asks for
    # them (ChecksumMode); a node that dropped them made it stop validating
    # silently. Objects within one chunk and across several (metadata learned
    # from a partial answer), cold and cached; never on a range, as S3.
    for key, size in (("sums/small.bin", 1000), ("sums/big.bin", 10 * 1024 * 1024 + 5)):
        data = os.urandom(size)
        origin.put_object(Bucket=BUCKET, Key=key, Body=data, ChecksumAlgorithm="CRC32")
        want = origin.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")["ChecksumCRC32"]
        for attempt in ("cold", "cached"):
            got = node.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
            assert got.get("ChecksumCRC32") == want, (key, attempt, got.get("ChecksumCRC32"), want)
            assert sha(got["Body"].read()) == sha(data), (key, attempt)
        head = node.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        assert head.get("ChecksumCRC32") == want, (key, "head")
        part = node.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-9", ChecksumMode="ENABLED")
        assert "ChecksumCRC32" not in part, (key, "a range carries no whole-object checksum")
        assert part["Body"].read() == data[:10]


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
