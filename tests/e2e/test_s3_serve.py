"""A real `oci-ref serve` with its blobs on S3 (moto in server mode, loopback): a
chunked push in chunks under S3's 5 MiB part minimum, the S3 server stalled and
back, and blob GETs redirected to presigned URLs that httpx follows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oci_ref.testing import OCIRegistry
from tests.engines import MotoServer, S3Bucket
from tests.support import digest

pytestmark = [pytest.mark.e2e, pytest.mark.engines]

MiB = 1 << 20


def serve(tmp_path: Path, bucket: S3Bucket, **settings: Any) -> OCIRegistry:
    return OCIRegistry(tmp_path / 'data', env=bucket.env, blob_store='s3',
                       s3_bucket=bucket.bucket, s3_endpoint_url=bucket.endpoint_url,
                       s3_region=bucket.region, s3_path_style=True, **settings)


@pytest.fixture
def registry(tmp_path: Path, s3_bucket: S3Bucket) -> Iterator[OCIRegistry]:
    # A short deadline: a stalled S3 answers 503 in two seconds, not thirty.
    srv = serve(tmp_path, s3_bucket, s3_timeout=2)
    yield srv
    srv.stop()


def push_chunked(c: httpx.Client, repo: str, data: bytes, chunk: int) -> httpx.Response:
    r = c.post(f'/v2/{repo}/blobs/uploads/')
    assert r.status_code == 202, r.text
    loc = r.headers['location']
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        r = c.patch(loc, content=piece, headers={
            'Content-Type': 'application/octet-stream',
            'Content-Range': f'{start}-{start + len(piece) - 1}'})
        assert r.status_code == 202, r.text
        loc = r.headers['location']
    return c.put(loc, params={'digest': digest(data)})


def test_a_chunked_push_in_small_chunks_lands_on_s3_and_pulls_back(registry, s3_bucket):
    data = os.urandom(13 * MiB + 4321)
    with httpx.Client(base_url=registry.url, timeout=60) as c:
        r = push_chunked(c, 'e2e/s3', data, 3 * MiB)  # every chunk < 5 MiB
        assert r.status_code == 201, r.text
        got = c.get(f'/v2/e2e/s3/blobs/{digest(data)}')
        assert got.status_code == 200
        assert got.content == data
        ranged = c.get(f'/v2/e2e/s3/blobs/{digest(data)}',
                       headers={'Range': f'bytes={6 * MiB}-{6 * MiB + 99}'})
        assert ranged.status_code == 206
        assert ranged.content == data[6 * MiB:6 * MiB + 100]
    import boto3

    s3 = boto3.client('s3', **s3_bucket.client_kwargs())
    keys = [o['Key'] for o in s3.list_objects_v2(Bucket=s3_bucket.bucket)
            .get('Contents', [])]
    d = digest(data).split(':')[1]
    assert keys == [f'blobs/sha256/{d[:2]}/{d}']  # no spool objects left behind
    assert not s3.list_multipart_uploads(Bucket=s3_bucket.bucket).get('Uploads')


def test_a_stalled_s3_answers_503_naming_the_store_then_works_again(
        registry, s3_server: MotoServer):
    data = os.urandom(MiB)
    with httpx.Client(base_url=registry.url, timeout=60) as c:
        assert push_chunked(c, 'e2e/s3', data, 256 * 1024).status_code == 201
        loc = c.post('/v2/e2e/s3/blobs/uploads/').headers['location']
        s3_server.pause()
        try:
            for r in (c.get(f'/v2/e2e/s3/blobs/{digest(data)}'),
                      c.patch(loc, content=b'x' * 1000,
                              headers={'Content-Type': 'application/octet-stream'})):
                assert r.status_code == 503, r.text
                assert 'retry-after' in r.headers
                error = r.json()['errors'][0]
                assert error['code'] == 'UNAVAILABLE'
                assert 'blobs (s3)' in r.text, r.text
        finally:
            s3_server.resume()
        assert c.get(f'/v2/e2e/s3/blobs/{digest(data)}').content == data
        # The session survived the failed PATCH and continues.
        r = c.patch(loc, content=b'y' * 1000,
                    headers={'Content-Type': 'application/octet-stream'})
        assert r.status_code == 202, r.text
        r = c.put(r.headers['location'], params={'digest': digest(b'y' * 1000)})
        assert r.status_code == 201, r.text


def test_blob_gets_redirect_to_a_presigned_url_that_clients_follow(tmp_path, s3_bucket):
    data = os.urandom(2 * MiB)
    with serve(tmp_path, s3_bucket, s3_redirect=True) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        assert push_chunked(c, 'e2e/s3', data, MiB).status_code == 201
        r = c.get(f'/v2/e2e/s3/blobs/{digest(data)}')
        assert r.status_code == 307
        url = r.headers['location']
        assert url.startswith(s3_bucket.endpoint_url)
        assert 'X-Amz-Signature=' in url and 'X-Amz-Algorithm=AWS4-HMAC-SHA256' in url
        assert r.headers['docker-content-digest'] == digest(data)
        followed = c.get(f'/v2/e2e/s3/blobs/{digest(data)}', follow_redirects=True)
        assert followed.status_code == 200
        assert followed.content == data
        # Range goes to S3 with the redirect.
        part = c.get(f'/v2/e2e/s3/blobs/{digest(data)}', follow_redirects=True,
                     headers={'Range': 'bytes=10-19'})
        assert part.status_code == 206 and part.content == data[10:20]
        # HEAD never redirects: its headers are the answer.
        assert c.head(f'/v2/e2e/s3/blobs/{digest(data)}').status_code == 200


def test_fsck_cli_checks_the_blobs_in_the_bucket(tmp_path, s3_bucket):
    data = os.urandom(3 * MiB)
    with serve(tmp_path, s3_bucket) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        assert push_chunked(c, 'e2e/s3', data, MiB).status_code == 201
    env = {k: v for k, v in os.environ.items() if not k.startswith('OCI_REF_')}
    env.update(s3_bucket.env, OCI_REF_BLOB_STORE='s3', OCI_REF_S3_BUCKET=s3_bucket.bucket,
               OCI_REF_S3_ENDPOINT_URL=s3_bucket.endpoint_url, OCI_REF_S3_PATH_STYLE='1')

    def fsck() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, '-m', 'oci_ref', 'fsck', '--root',
                               str(tmp_path / 'data')], capture_output=True, text=True,
                              env=env, timeout=120)

    r = fsck()
    assert (r.returncode, r.stdout) == (0, '0 problems, 0 notices\n'), r.stderr
    import boto3

    d = digest(data).split(':')[1]
    boto3.client('s3', **s3_bucket.client_kwargs()).put_object(
        Bucket=s3_bucket.bucket, Key=f'blobs/sha256/{d[:2]}/{d}', Body=data[::-1])
    r = fsck()
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith(f'ERROR  blob-corrupt: {digest(data)}: '), r.stdout
