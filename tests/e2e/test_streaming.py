"""Big transfers stream through the server: memory stays flat whatever the size.

A dedicated server (its RSS is measured alone); bodies are generated and hashed
piece by piece on the client too, so neither side ever holds a whole blob.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e._helpers import MIB, PatternBody, RssSampler, Started, Stopwatch
from tests.support import rss_kib

pytestmark = pytest.mark.e2e

GIB = 1 << 30
RSS_LIMIT_KIB = 150 * 1024


@pytest.fixture(scope='module')
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    srv = Started(tmp_path_factory.mktemp('big') / 'data')
    try:
        yield srv
    finally:
        srv.stop()


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f'\n[measure] {text}')


def pull_and_hash(c: httpx.Client, url: str, size: int) -> tuple[str, int, httpx.Headers]:
    """GET to nowhere: hash the body as it arrives."""
    h = hashlib.sha256()
    received = 0
    with c.stream('GET', url) as r:
        assert r.status_code == 200, r.read()[:500]
        for chunk in r.iter_raw(MIB):
            h.update(chunk)
            received += len(chunk)
        headers = r.headers
    return f'sha256:{h.hexdigest()}', received, headers


def test_1gib_streamed_patch_push_and_pull_stay_under_150mib_rss(big_server, capsys):
    """POST, one chunked PATCH of 1 GiB in 1 MiB pieces, PUT ?digest=; then GET it
    back hashing on the fly. Peak server RSS < 150 MiB during each."""
    name = 'big/one-gib'
    body = PatternBody(GIB)
    with httpx.Client(base_url=big_server.url, timeout=300) as c:
        idle_kib = rss_kib(big_server.proc.pid)
        with RssSampler([big_server.proc.pid]) as push_rss, Stopwatch() as push_time:
            r = c.post(f'/v2/{name}/blobs/uploads/')
            assert r.status_code == 202, r.content
            r = c.patch(r.headers['location'], content=iter(body),
                        headers={'Content-Type': 'application/octet-stream'})
            assert r.status_code == 202, r.content
            assert r.headers['range'] == f'0-{GIB - 1}'
            r = c.put(f'{r.headers["location"]}?digest={body.digest}')
            assert r.status_code == 201, r.content
            assert r.headers['docker-content-digest'] == body.digest
        r = c.head(f'/v2/{name}/blobs/{body.digest}')
        assert r.headers['content-length'] == str(GIB)

        with RssSampler([big_server.proc.pid]) as pull_rss, Stopwatch() as pull_time:
            got, received, headers = pull_and_hash(c, f'/v2/{name}/blobs/{body.digest}',
                                                   GIB)
    report(capsys, f'1 GiB push: {GIB / MIB / push_time.seconds:.0f} MiB/s '
                   f'({push_time.seconds:.1f} s), peak server RSS '
                   f'{push_rss.peak_kib / 1024:.1f} MiB (idle {idle_kib / 1024:.1f} MiB, '
                   f'{push_rss.samples} samples)')
    report(capsys, f'1 GiB pull: {GIB / MIB / pull_time.seconds:.0f} MiB/s '
                   f'({pull_time.seconds:.1f} s), peak server RSS '
                   f'{pull_rss.peak_kib / 1024:.1f} MiB ({pull_rss.samples} samples)')
    assert received == GIB
    assert got == body.digest
    assert headers['content-length'] == str(GIB)
    assert 'transfer-encoding' not in headers
    assert push_rss.peak_kib < RSS_LIMIT_KIB, f'push peak RSS {push_rss.peak_kib} KiB'
    assert pull_rss.peak_kib < RSS_LIMIT_KIB, f'pull peak RSS {pull_rss.peak_kib} KiB'


def test_256mib_upload_in_4_content_range_patches_streams(big_server, capsys):
    """Four 64 MiB PATCHes with Content-Range and Content-Length (the classic chunked
    upload), an empty closing PUT, then the blob pulled back and hashed."""
    name = 'big/quarter-gib'
    part = 64 * MIB
    hasher = hashlib.sha256()
    with httpx.Client(base_url=big_server.url, timeout=300) as c, \
            RssSampler([big_server.proc.pid]) as rss, Stopwatch() as t:
        r = c.post(f'/v2/{name}/blobs/uploads/')
        assert r.status_code == 202, r.content
        location = r.headers['location']
        for i in range(4):
            start, end = i * part, (i + 1) * part - 1
            chunk = PatternBody(part, first_piece=i * (part // MIB), hasher=hasher)
            r = c.patch(location, content=iter(chunk), headers={
                'Content-Type': 'application/octet-stream',
                'Content-Range': f'{start}-{end}',
                'Content-Length': str(part),
            })
            assert r.status_code == 202, (i, r.content)
            assert r.headers['range'] == f'0-{end}'
            location = r.headers['location']
        d = f'sha256:{hasher.hexdigest()}'
        r = c.put(f'{location}?digest={d}')
        assert r.status_code == 201, r.content
        assert r.headers['docker-content-digest'] == d
        got, received, headers = pull_and_hash(c, f'/v2/{name}/blobs/{d}', 4 * part)
    report(capsys, f'256 MiB in 4 PATCHes + pull: {t.seconds:.1f} s, peak server RSS '
                   f'{rss.peak_kib / 1024:.1f} MiB')
    assert (received, got) == (4 * part, d)
    assert headers['content-length'] == str(4 * part)
    assert rss.peak_kib < RSS_LIMIT_KIB, f'peak RSS {rss.peak_kib} KiB'
    blob = Path(big_server.root) / 'blobs' / 'sha256' / d[7:9] / d[7:]
    assert blob.stat().st_size == 4 * part
