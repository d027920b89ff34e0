"""Faults across replicas on PostgreSQL + S3 behind haproxy (issue 14).

- The S3 server (moto) stalls (SIGSTOP): through the load balancer, each replica
  answers what needs S3 with a 503 naming the store (not haproxy's own 503: both
  replicas stay up, /healthz touches no store), and everything works again once S3
  is back, the upload session that was open included.
- GC runs (online in one replica, or `oci-ref gc` from outside) while pushes arrive
  on another replica: it collects what the pushes left untagged, and everything
  acknowledged that a tag still reaches is intact; fsck of the shared stores is
  clean.
- A real client meets the stall: crane's push fails with the store named in its
  error, and succeeds once S3 is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.engines import MotoServer, PostgresServer
from tests.replicas import Replicas, ReplicaSets
from tests.support import OCI_MANIFEST, digest, image_manifest, push_blob

pytestmark = [pytest.mark.e2e, pytest.mark.engines]

MiB = 1 << 20


@pytest.fixture(scope='module')
def stores(postgres_server: PostgresServer, s3_server: MotoServer) -> ReplicaSets:
    return ReplicaSets(postgres_server, s3_server, count=2, blobs='s3')


@pytest.fixture(scope='module')
def replicas(stores: ReplicaSets, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Replicas]:
    """Two replicas, each its own root, a short S3 deadline (503 in 2 s, not 30)."""
    base = tmp_path_factory.mktemp('faults')
    with stores.serve(base / 'data', s3_timeout=2,
                      each=[{'root': base / f'r{i}'} for i in range(2)]) as r:
        yield r


def assert_names_s3(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert 'retry-after' in r.headers
    error = r.json()['errors'][0]
    assert error['code'] == 'UNAVAILABLE', error
    assert 'blobs (s3)' in r.text, r.text


def test_s3_stalled_gives_503_naming_the_store_on_every_replica_then_recovers(
        replicas: Replicas, s3_server: MotoServer) -> None:
    data = os.urandom(MiB)
    d = digest(data)
    with httpx.Client(base_url=replicas.url, timeout=60) as c:
        push_blob(c, 'faults/s3', data)
        location = c.post('/v2/faults/s3/blobs/uploads/').headers['location']
        seen = replicas.requests_seen('GET', f'/blobs/{d}')
        s3_server.pause()
        try:
            # Two GETs and a PATCH in a row: round-robin puts them on both replicas.
            answers = [c.get(f'/v2/faults/s3/blobs/{d}'), c.get(f'/v2/faults/s3/blobs/{d}'),
                       c.patch(location, content=b'x' * 1000,
                               headers={'Content-Type': 'application/octet-stream'})]
            for r in answers:
                assert_names_s3(r)
            after = replicas.requests_seen('GET', f'/blobs/{d}')
            assert [b - a for a, b in zip(seen, after, strict=True)] == [1, 1]
            # The 503s are the replicas', not haproxy's: it still has both up.
            assert replicas.lb.states() == ['UP', 'UP']
            assert c.get('/healthz').status_code == 200
        finally:
            s3_server.resume()
        for _ in range(2):  # on each replica
            r = c.get(f'/v2/faults/s3/blobs/{d}')
            assert r.status_code == 200 and r.content == data
        # The session survived the failed PATCH and continues on either replica.
        more = os.urandom(2 * MiB)
        r = c.patch(location, content=more,
                    headers={'Content-Type': 'application/octet-stream'})
        assert r.status_code == 202, r.text
        r = c.put(r.headers['location'], params={'digest': digest(more)})
        assert r.status_code == 201, r.text
        assert c.get(f'/v2/faults/s3/blobs/{digest(more)}').content == more


def test_an_upload_whose_closing_put_met_a_stalled_s3_completes_when_retried(
        replicas: Replicas, s3_server: MotoServer) -> None:
    """A chunked upload over both replicas (PATCHes above and below S3's 5 MiB part
    minimum); S3 stalls at the closing PUT: 503 naming the store, and the same PUT
    through the load balancer (so on the other replica too) commits once S3 is
    back, with the whole blob verified."""
    data = os.urandom(7 * MiB + 12345)
    d = digest(data)
    with httpx.Client(base_url=replicas.url, timeout=60) as c:
        location = c.post('/v2/faults/put/blobs/uploads/').headers['location']
        for start, end in ((0, 6 * MiB), (6 * MiB, len(data))):
            r = c.patch(location, content=data[start:end], headers={
                'Content-Type': 'application/octet-stream',
                'Content-Range': f'{start}-{end - 1}'})
            assert r.status_code == 202, r.text
            location = r.headers['location']
        s3_server.pause()
        try:
            assert_names_s3(c.put(location, params={'digest': d}))
        finally:
            s3_server.resume()
        answers = [c.put(location, params={'digest': d}) for _ in range(2)]
        assert answers[0].status_code == 201, answers[0].text
        # The session is gone once committed, whichever replica is asked.
        assert answers[1].status_code == 404, answers[1].text
        for _ in range(2):
            r = c.get(f'/v2/faults/put/blobs/{d}')
            assert r.status_code == 200 and digest(r.content) == d


@pytest.mark.crane
def test_crane_push_while_s3_stalls_fails_naming_the_store_then_succeeds(
        replicas: Replicas, s3_server: MotoServer, tmp_path: Path) -> None:
    """What a user sees: crane, through the load balancer, gives up (after its own
    retries of the 503s) with the store named in its error, and the same push
    succeeds once S3 is back."""
    from tests.interop.conftest import find_client
    from tests.interop.layout import write_docker_archive

    crane = find_client('crane')
    write_docker_archive(tmp_path / 'img.tar', 'faults/crane:v1', seed=str(tmp_path))
    push = [crane, 'push', '--insecure', str(tmp_path / 'img.tar'),
            f'{replicas.host}/faults/crane:v1']
    s3_server.pause()
    try:
        refused = subprocess.run(push, capture_output=True, text=True, timeout=300)
    finally:
        s3_server.resume()
    assert refused.returncode != 0, refused.stdout
    assert 'UNAVAILABLE' in refused.stderr and 'blobs (s3)' in refused.stderr, \
        refused.stderr
    done = subprocess.run(push, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    digest_ = done.stdout.strip().rsplit('@', 1)[-1]
    with httpx.Client(base_url=replicas.url, timeout=60) as c:
        for _ in range(2):  # each replica
            r = c.get('/v2/faults/crane/manifests/v1', headers={
                'Accept': 'application/vnd.docker.distribution.manifest.v2+json'})
            assert r.status_code == 200 and digest(r.content) == digest_, r.text


def oci_ref(replicas: Replicas, *args: str) -> subprocess.CompletedProcess[str]:
    """`oci-ref <args>` (fsck, gc) on the shared stores, as an operator would run it
    on any machine that reaches them (replica 0's root for what is local)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('OCI_REF_')}
    env.update(replicas.stores_env())
    return subprocess.run(
        [sys.executable, '-m', 'oci_ref', *args, '--root', str(replicas.roots[0])],
        env=env, capture_output=True, text=True, timeout=300)


class CommandLoop:
    """``oci-ref gc`` over and over in a thread until stopped: an operator's
    collection from outside the replicas. A pass either succeeds or refuses with
    exit 1 because a commit held the GC lock at that moment (it gives up rather than
    wait, gc.collect); anything else is a failure."""

    def __init__(self, replicas: Replicas):
        self.replicas = replicas
        self.stopped = threading.Event()
        self.failed: list[str] = []
        self.passes = 0
        self.thread = threading.Thread(target=self._loop)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            done = oci_ref(self.replicas, 'gc', '--grace', '1', '--untagged')
            self.passes += 1
            busy = done.returncode == 1 and done.stdout == '' and (
                'blob commit holds the GC lock' in done.stderr)
            if done.returncode != 0 and not busy:
                self.failed.append(f'exit {done.returncode}: {done.stdout}{done.stderr}')

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def push_image(c: httpx.Client, repo: str, config: bytes, layer: bytes,
               tags: list[str]) -> str:
    """Blobs, then the manifest under each tag, as a client does: a manifest PUT
    refused because GC collected a blob pushed longer than the grace period ago
    (MANIFEST_BLOB_UNKNOWN, gc.py) is retried after pushing the blobs again."""
    body = image_manifest(config, [layer])
    for attempt in range(5):
        for blob in (config, layer):
            push_blob(c, repo, blob)
        answers = [c.put(f'/v2/{repo}/manifests/{tag}', content=body,
                         headers={'Content-Type': OCI_MANIFEST}) for tag in tags]
        if all(r.status_code == 201 for r in answers):
            return digest(body)
        for r in answers:
            assert r.status_code in (201, 400), (attempt, r.status_code, r.text)
            if r.status_code == 400:
                assert r.json()['errors'][0]['code'] == 'MANIFEST_BLOB_UNKNOWN', r.text
    pytest.fail(f'{tags}: refused five times')


@pytest.mark.parametrize('collector', ['online', 'command'])
def test_gc_while_pushes_arrive_on_another_replica(
        stores: ReplicaSets, tmp_path: Path, collector: str) -> None:
    """GC every second (grace 1 s, untagged manifests too): online in replica 0, or
    `oci-ref gc` in a loop from outside, while a client pushes through replica 1:
    one image per round, always re-tagging `latest` (so the one before becomes
    untagged: GC's work) and keeping every fifth under a tag of its own. Pushing
    goes on until GC is seen collecting untagged manifests in two passes. Then every
    acknowledged manifest a tag reaches is served whole by both replicas, and fsck
    of the shared stores is clean."""
    gc = ({'gc_interval': 1, 'gc_grace': 1, 'gc_untagged': True}
          if collector == 'online' else {})
    with stores.serve(tmp_path / 'data', each=[
            {'root': tmp_path / 'r0', **gc}, {'root': tmp_path / 'r1'}]) as replicas:
        loop = CommandLoop(replicas) if collector == 'command' else None
        pusher = replicas.servers[1]
        kept: dict[str, str] = {}  # tag -> digest, acknowledged (201)
        overwritten: list[str] = []  # acknowledged, then untagged by the next push
        collected: list[str] = []
        passes = 0
        latest = None
        with httpx.Client(base_url=pusher.url, timeout=60) as c:
            for i in range(2000):
                config = f'{{"architecture":"amd64","os":"linux","round":{i}}}'.encode()
                tags = ['latest', *([f'v{i}'] if i % 5 == 0 else [])]
                pushed = push_image(c, 'gc/churn', config, os.urandom(64 * 1024), tags)
                kept.update(dict.fromkeys(tags, pushed))
                if latest is not None and i % 5 != 1:  # untagged now
                    overwritten.append(latest)
                latest = pushed
                # GC's work, seen from outside: untagged manifests are gone.
                gone = [m for m in overwritten if c.head(
                    f'/v2/gc/churn/manifests/{m}').status_code == 404]
                if len(gone) > len(collected):
                    passes += 1
                collected = gone
                if passes >= 2:  # two passes overlapped the pushes
                    break
            else:
                pytest.fail(f'GC ({collector}) never collected')
        if loop is not None:
            loop.stop()
            assert not loop.failed, loop.failed
        assert i >= 2
        for server in replicas.servers:  # each replica serves the same survivors
            with httpx.Client(base_url=server.url, timeout=60) as c:
                listed = c.get('/v2/gc/churn/tags/list').json()['tags']
                assert sorted(listed) == sorted(kept), listed
                for tag, d in kept.items():
                    r = c.get(f'/v2/gc/churn/manifests/{tag}',
                              headers={'Accept': OCI_MANIFEST})
                    assert r.status_code == 200 and digest(r.content) == d, (tag, r.text)
                    m = r.json()
                    for desc in [m['config'], *m['layers']]:
                        b = c.get(f'/v2/gc/churn/blobs/{desc["digest"]}')
                        assert b.status_code == 200, (tag, desc, b.text)
                        assert digest(b.content) == desc['digest']
        done = oci_ref(replicas, 'fsck')
        assert done.returncode == 0, done.stdout + done.stderr
        assert '0 problems' in done.stdout, done.stdout
