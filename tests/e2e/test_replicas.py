"""Replicas on shared stores behind a real load balancer (issue 14).

Two `oci-ref serve` processes, started at once (so both migrate the same fresh
PostgreSQL database together), keep their metadata in one PostgreSQL database and
their blobs and upload spools under one shared root (the filesystem stands in for
S3 here), behind haproxy round-robin without stickiness: consecutive requests of one
client land on alternate replicas.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engines import PostgresServer, S3Bucket
from tests.replicas import LoadBalancer, Replicas, ReplicaSets, s3_settings

pytestmark = [pytest.mark.e2e, pytest.mark.engines]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str, load_balancer: LoadBalancer,
             request: pytest.FixtureRequest) -> Iterator[Replicas]:
    """Two replicas; ``@pytest.mark.parametrize('replicas', [n], indirect=True)``
    for ``n``."""
    count = getattr(request, 'param', 2)
    with Replicas(tmp_path / 'data', postgres_url, load_balancer, count) as r:
        yield r


def round_robin(requests: int, replicas: int) -> list[int]:
    """How many of ``requests`` consecutive requests each replica gets from a
    round-robin balancer (sorted: which one starts does not matter)."""
    return sorted(len(range(i, requests, replicas)) for i in range(replicas))


@pytest.mark.parametrize('replicas', [2, 3], indirect=True)
def test_a_chunked_push_whose_patches_land_on_different_replicas_completes(
        replicas: Replicas) -> None:
    """POST, four PATCHes and the closing PUT go round-robin: each replica continues
    the session another one started (state in PostgreSQL, spool shared); the blob is
    then served by every replica, byte for byte."""
    data = bytes(range(256)) * 4096  # 1 MiB in four chunks
    digest = f'sha256:{hashlib.sha256(data).hexdigest()}'
    chunks = [data[i:i + len(data) // 4] for i in range(0, len(data), len(data) // 4)]
    with httpx.Client(base_url=replicas.url, timeout=30) as c:
        r = c.post('/v2/scale/out/blobs/uploads/')
        assert r.status_code == 202, r.text
        location = r.headers['location']
        session = location.rstrip('/').rsplit('/', 1)[-1].split('?')[0]
        offset = 0
        for chunk in chunks:
            r = c.patch(location, content=chunk, headers={
                'Content-Type': 'application/octet-stream',
                'Content-Range': f'{offset}-{offset + len(chunk) - 1}'})
            assert r.status_code == 202, r.text
            offset += len(chunk)
            assert r.headers['range'] == f'0-{offset - 1}'
            location = r.headers['location']
        r = c.put(location, params={'digest': digest})
        assert r.status_code == 201, r.text
    patches = replicas.requests_seen('PATCH', session)
    # Every replica took its turn, no stickiness.
    assert sorted(patches) == round_robin(4, len(replicas.servers)), patches
    for server in replicas.servers:
        r = httpx.get(f'{server.url}/v2/scale/out/blobs/{digest}', timeout=30)
        assert r.status_code == 200 and r.content == data


def own_roots(parent: Path, count: int) -> list[dict[str, Any]]:
    """``each`` for replicas that share nothing on disk."""
    return [{'root': parent / f'r{i}' / 'data'} for i in range(count)]


@pytest.mark.parametrize('count', [2, 3])
def test_replicas_on_postgresql_and_s3_continue_each_others_chunked_push(
        tmp_path: Path, postgres_url: str, s3_bucket: S3Bucket,
        load_balancer: LoadBalancer, count: int) -> None:
    """The scale-out pair: metadata in PostgreSQL, blobs in S3 (moto), each replica
    with its own --root. PATCHes go round-robin over the replicas; the multipart
    state lives in PostgreSQL (blob_spools), so the push completes."""
    data = bytes(range(256)) * 4096 * 12  # 12 MiB: three 4 MiB chunks
    digest = f'sha256:{hashlib.sha256(data).hexdigest()}'
    step = 4 * 1024 * 1024
    env, settings = s3_settings(s3_bucket)
    with Replicas(tmp_path, postgres_url, load_balancer, count, env=env,
                  each=own_roots(tmp_path, count), **settings) as replicas:
        with httpx.Client(base_url=replicas.url, timeout=60) as c:
            r = c.post('/v2/scale/s3/blobs/uploads/')
            assert r.status_code == 202, r.text
            location = r.headers['location']
            for offset in range(0, len(data), step):
                chunk = data[offset:offset + step]
                r = c.patch(location, content=chunk, headers={
                    'Content-Type': 'application/octet-stream',
                    'Content-Range': f'{offset}-{offset + len(chunk) - 1}'})
                assert r.status_code == 202, r.text
                location = r.headers['location']
            r = c.put(location, params={'digest': digest})
            assert r.status_code == 201, r.text
        session = location.rstrip('/').rsplit('/', 1)[-1].split('?')[0]
        seen = replicas.requests_seen('PATCH', session)
        assert sorted(seen) == round_robin(3, count), seen
        for server in replicas.servers:
            r = httpx.get(f'{server.url}/v2/scale/s3/blobs/{digest}', timeout=60)
            assert r.status_code == 200 and r.content == data


@pytest.mark.parametrize('replicas', [2, 3], indirect=True)
def test_a_replica_killed_mid_patch_leaves_a_session_another_continues(
        replicas: Replicas, postgres_url: str) -> None:
    """SIGKILL the replica a PATCH streams into while it holds the session's claim:
    the client's retry through the load balancer is served by another replica at
    once (the dead one's lease is not waited out: its presence died with it), the
    push completes, and fsck on the shared stores is clean."""
    import psycopg

    data = b'0123456789abcdef' * 65536  # 1 MiB
    digest = f'sha256:{hashlib.sha256(data).hexdigest()}'
    doomed = replicas.servers[0]
    with httpx.Client(base_url=doomed.url, timeout=30) as c:
        location = c.post('/v2/killed/mid/blobs/uploads/').headers['location']
    session = location.rstrip('/').rsplit('/', 1)[-1].split('?')[0]
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield data[:len(data) // 2]
        release.wait(30)
        yield data[len(data) // 2:]

    def patch() -> BaseException | None:
        try:
            with httpx.Client(base_url=doomed.url, timeout=30) as c:
                c.patch(location, content=body(), headers={
                    'Content-Type': 'application/octet-stream'})
        except httpx.HTTPError as ex:
            return ex
        return None

    with ThreadPoolExecutor(1) as pool, psycopg.connect(postgres_url) as db:
        cut = pool.submit(patch)
        held = "SELECT count(*) FROM locks WHERE name = 'upload:' || %s"
        for _ in range(1500):  # until the claim is in the shared store
            if db.execute(held, [session]).fetchone() == (1,):
                break
            threading.Event().wait(0.01)
        else:
            pytest.fail('the PATCH never claimed its session')
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
        release.set()
        assert isinstance(cut.result(), httpx.HTTPError)
        assert db.execute(held, [session]).fetchone() == (1,)  # its lease is left
    with httpx.Client(base_url=replicas.url, timeout=30) as c:
        r = c.get(location)
        assert r.status_code == 204, r.text
        # The cut chunk was never acknowledged: the session holds nothing yet.
        assert r.headers.get('range', '0-0').removeprefix('bytes=') == '0-0'
        r = c.patch(location, content=data, headers={
            'Content-Type': 'application/octet-stream',
            'Content-Range': f'0-{len(data) - 1}'})
        assert r.status_code == 202, r.text
        r = c.put(r.headers['location'], params={'digest': digest})
        assert r.status_code == 201, r.text
        assert c.get(f'/v2/killed/mid/blobs/{digest}').content == data
    fsck = subprocess.run(
        [sys.executable, '-m', 'oci_ref', 'fsck', '--root', str(doomed.root)],
        env={**os.environ, 'OCI_REF_METADATA_STORE': postgres_url},
        capture_output=True, text=True, timeout=120)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_a_tag_pushed_through_one_replica_is_listed_by_the_other(
        replicas: Replicas) -> None:
    manifest = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.'
                b'v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json",'
                b'"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c0'
                b'60f61caaff8a","size":2},"layers":[]}')
    one, two = replicas.servers
    with httpx.Client(base_url=one.url, timeout=30) as c:
        r = c.post('/v2/a/b/blobs/uploads/', params={
            'digest': 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f6'
                      '1caaff8a'}, content=b'{}')
        assert r.status_code == 201, r.text
        r = c.put('/v2/a/b/manifests/v1', content=manifest, headers={
            'Content-Type': 'application/vnd.oci.image.manifest.v1+json'})
        assert r.status_code == 201, r.text
    with httpx.Client(base_url=two.url, timeout=30) as c:
        assert c.get('/v2/a/b/tags/list').json() == {'name': 'a/b', 'tags': ['v1']}
        assert c.get('/v2/a/b/manifests/v1').content == manifest


@pytest.mark.parametrize('replicas', [2, 3], indirect=True)
def test_concurrent_pushes_of_one_image_through_both_replicas_agree(
        replicas: Replicas) -> None:
    """Eight clients push the same blobs, manifest and tag at once, through the load
    balancer (so onto every replica): every push succeeds and every replica then
    answers alike."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers",' \
             b'"diff_ids":[]}}'
    layer = b'shared layer ' * 50000

    def desc(media_type: str, data: bytes) -> dict[str, Any]:
        return {'mediaType': media_type, 'size': len(data),
                'digest': f'sha256:{hashlib.sha256(data).hexdigest()}'}

    manifest = json.dumps({
        'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
        'config': desc('application/vnd.oci.image.config.v1+json', config),
        'layers': [desc('application/vnd.oci.image.layer.v1.tar', layer)]}).encode()

    def push(_: int) -> list[int]:
        statuses = []
        with httpx.Client(base_url=replicas.url, timeout=60) as c:
            for data in (config, layer):
                r = c.post('/v2/same/image/blobs/uploads/')
                statuses.append(r.status_code)
                r = c.put(r.headers['location'], content=data, params={
                    'digest': f'sha256:{hashlib.sha256(data).hexdigest()}'})
                statuses.append(r.status_code)
            r = c.put('/v2/same/image/manifests/latest', content=manifest, headers={
                'Content-Type': 'application/vnd.oci.image.manifest.v1+json'})
            statuses.append(r.status_code)
        return statuses

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(push, range(8)))
    assert all(r == [202, 201, 202, 201, 201] for r in results), results
    for server in replicas.servers:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get('/v2/same/image/tags/list').json()['tags'] == ['latest']
            assert c.get('/v2/same/image/manifests/latest').content == manifest
            r = c.get(f"/v2/same/image/blobs/{desc('', layer)['digest']}")
            assert r.content == layer
            assert c.get('/v2/_catalog').json() == {'repositories': ['same/image']}


def _load_runner() -> Any:
    spec = importlib.util.spec_from_file_location('conformance_run',
                                                  ROOT / 'conformance' / 'run.py')
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


# Each suite once (legacy, the redesigned one in both modes with every area on) and
# token auth (the signing key in PostgreSQL): the others add only time.
# And the redesigned suite once more with blobs in S3 (moto).
@pytest.mark.parametrize(('run', 'blobs'), [('legacy', 'fs'), ('all', 'fs'),
                                            ('dev', 'fs'), ('token', 'fs'), ('all', 's3')])
def test_conformance_through_the_load_balancer(
        run: str, blobs: str, tmp_path: Path, postgres_server: PostgresServer,
        load_balancer: LoadBalancer, conformance_report: Any,
        request: pytest.FixtureRequest) -> None:
    """The suites against two replicas behind haproxy: every request may land on
    either."""
    if not runner.binary('main'):
        from tests.engines import missing

        missing('the conformance suite binary is not found (set CONFORMANCE_DIR)')
    s3 = request.getfixturevalue('s3_server') if blobs == 's3' else None
    sets = ReplicaSets(postgres_server, s3, blobs=blobs, load_balancer=load_balancer)
    outcome = runner.run_one(runner.RUNS[run], tmp_path, runner.skip_list(),
                             serve=sets.serve)
    conformance_report(f'{outcome.line()} [{sets.describe()}]')
    assert outcome.tests > 0 and outcome.ok, (
        outcome.line() + ''.join(f'\n  failed: {n}' for n in outcome.failed_cases)
        + ''.join(f'\n  unexpected skip: {n}' for n in outcome.unexpected_skips)
        + (f'\n  {outcome.note}' if outcome.note else ''))
