"""Many clients pushing the same thing at once end in one consistent state.

Each scenario lines its clients up on a barrier just before the request that
commits (the monolithic POST, the final PUT of a session, the manifest PUT), each on
its own connection, against one worker and against ``--workers 2`` (where the race
is between processes: upload claims and the GC lock in the metadata store, SQLite's
write lock). Afterwards the storage
root is inspected from the outside: one file per blob, one row per manifest, tags
that name stored manifests, no leftover spools or sessions, and ``oci-ref fsck``
clean.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e._helpers import Started
from tests.e2e.faults import (
    assert_fsck_clean,
    blob_file_problems,
    blob_files,
    db_state,
    integrity_problems,
    log_problems,
    spools,
    worker_pids,
)
from tests.support import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Server,
    assert_error,
    digest,
    push_blob,
)

pytestmark = pytest.mark.e2e

OCTET = {'Content-Type': 'application/octet-stream'}
T = TypeVar('T')


@pytest.fixture(scope='module', params=[1, 2], ids=['1-worker', '2-workers'])
def srv(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workers = request.param
    root = tmp_path_factory.mktemp(f'concurrency-{workers}') / 'data'
    s = Started(root, *(['--workers', str(workers)] if workers > 1 else []))
    try:
        if workers > 1:
            assert len(worker_pids(s, workers)) == workers
        yield s
    finally:
        s.stop()


def race(n: int, prepare: Callable[[int, httpx.Client], Any],
         commit: Callable[[int, httpx.Client, Any], T], url: str) -> list[T]:
    """``n`` threads, each on its own connection: ``prepare`` (not timed), then all
    wait for each other, then ``commit`` at once. Returns the commits' results."""
    barrier = threading.Barrier(n, timeout=60)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=60) as c:
                state = prepare(i, c)
                barrier.wait()
                results[i] = commit(i, c, state)
        except BaseException as ex:
            errors.append(ex)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def settled(srv: Server) -> None:
    """Nothing half-done is left: one file per blob row and no other file, every
    file hashes to its name, no spool and no session, metadata consistent."""
    root = srv.root
    state = db_state(root)
    assert set(blob_files(root)) == set(state.blobs)
    assert not blob_file_problems(root)
    assert not integrity_problems(root, state)
    assert spools(root) == set(), spools(root)
    assert state.uploads == {}
    assert not log_problems(srv), log_problems(srv)


def sha(data: bytes) -> str:
    return digest(data)


# -- one blob, many clients ------------------------------------------------------------


METHODS = ('monolithic', 'post-put', 'chunked', 'streamed')


def blob_pusher(repo: str, data: bytes) -> tuple[Callable[..., Any], Callable[..., Any]]:
    d = sha(data)

    def prepare(i: int, c: httpx.Client) -> str | None:
        method = METHODS[i % len(METHODS)]
        if method == 'monolithic':
            return None
        r = c.post(f'/v2/{repo}/blobs/uploads/')
        assert r.status_code == 202, r.content
        location = r.headers['location']
        if method == 'chunked':
            third = len(data) // 3
            for start, end in ((0, third), (third, 2 * third)):
                r = c.patch(location, content=data[start:end], headers={
                    **OCTET, 'Content-Range': f'{start}-{end - 1}'})
                assert r.status_code == 202, r.content
            return f'{location}#{2 * third}'
        if method == 'streamed':
            r = c.patch(location, content=iter([data[:1000], data[1000:]]))
            assert r.status_code == 202, r.content
            assert r.headers['range'] == f'0-{len(data) - 1}'
        return location

    def commit(i: int, c: httpx.Client, location: str | None) -> httpx.Response:
        method = METHODS[i % len(METHODS)]
        if method == 'monolithic':
            return c.post(f'/v2/{repo}/blobs/uploads/?digest={d}', content=data,
                          headers=OCTET)
        if method == 'chunked':
            assert location is not None
            location, _, done = location.partition('#')
            rest = data[int(done):]
            return c.put(f'{location}?digest={d}', content=rest, headers={
                **OCTET, 'Content-Range': f'{done}-{len(data) - 1}'})
        if method == 'streamed':
            return c.put(f'{location}?digest={d}')
        return c.put(f'{location}?digest={d}', content=data, headers=OCTET)

    return prepare, commit


def test_same_blob_same_repo(srv: Server) -> None:
    """16 clients, the same 768 KiB blob, the same repository, four push methods."""
    repo = 'race/blob'
    data = random.Random(1).randbytes(768 * 1024)
    d = sha(data)
    prepare, commit = blob_pusher(repo, data)
    results = race(16, prepare, commit, srv.url)
    for r in results:
        assert r.status_code == 201, (r.status_code, r.content[:300])
        assert r.headers['docker-content-digest'] == d
        assert r.headers['location'] == f'/v2/{repo}/blobs/{d}'
    state = db_state(srv.root)
    assert state.blobs[d] == len(data)
    assert [link for link in state.links if link[1] == d] == [(repo, d)]
    files = blob_files(srv.root)
    assert d in files and files[d].stat().st_size == len(data)
    with httpx.Client(base_url=srv.url) as c:
        r = c.get(f'/v2/{repo}/blobs/{d}')
        assert r.status_code == 200 and r.content == data
        assert r.headers['docker-content-digest'] == d
    settled(srv)


def test_same_blob_two_repos_and_mounts(srv: Server) -> None:
    """The same blob pushed into two repositories and mounted into a third, at once:
    one file, one blob row, one link per repository."""
    data = random.Random(2).randbytes(300 * 1024)
    d = sha(data)
    with httpx.Client(base_url=srv.url) as c:
        push_blob(c, 'race/source', data)
    pushers = [blob_pusher(repo, data) for repo in ('race/a', 'race/b')]

    def prepare(i: int, c: httpx.Client) -> Any:
        return None if i % 3 == 2 else pushers[i % 3][0](i // 3, c)

    def commit(i: int, c: httpx.Client, state: Any) -> httpx.Response:
        if i % 3 == 2:
            return c.post(f'/v2/race/c/blobs/uploads/?mount={d}&from=race/source')
        return pushers[i % 3][1](i // 3, c, state)

    for r in race(18, prepare, commit, srv.url):
        assert r.status_code == 201, (r.status_code, r.content[:300])
        assert r.headers['docker-content-digest'] == d
    state = db_state(srv.root)
    assert sorted(link for link in state.links if link[1] == d) == [
        ('race/a', d), ('race/b', d), ('race/c', d), ('race/source', d)]
    assert state.blobs[d] == len(data)
    settled(srv)


def test_pushes_racing_deletes_of_one_blob(srv: Server) -> None:
    """Pushes and deletes of one blob at once: whichever wins, the blob is either
    served intact or cleanly unknown, and its file is intact."""
    repo = 'race/push-delete'
    data = random.Random(3).randbytes(64 * 1024)
    d = sha(data)
    with httpx.Client(base_url=srv.url) as c:
        push_blob(c, repo, data)

    def commit(i: int, c: httpx.Client, _: Any) -> httpx.Response:
        if i % 2:
            return c.delete(f'/v2/{repo}/blobs/{d}')
        return c.post(f'/v2/{repo}/blobs/uploads/?digest={d}', content=data,
                      headers=OCTET)

    results = race(12, lambda i, c: None, commit, srv.url)
    for i, r in enumerate(results):
        assert r.status_code in ((202, 404) if i % 2 else (201,)), (i, r.status_code)
    with httpx.Client(base_url=srv.url) as c:
        r = c.get(f'/v2/{repo}/blobs/{d}')
        if r.status_code == 200:
            assert r.content == data and r.headers['docker-content-digest'] == d
        else:
            assert_error(r, 404, 'BLOB_UNKNOWN')
        # Whatever the race left, a push now makes it servable again.
        push_blob(c, repo, data)
        assert c.get(f'/v2/{repo}/blobs/{d}').content == data
    settled(srv)


def test_same_session_same_chunk(srv: Server) -> None:
    """8 clients PATCH the same first chunk into one session: exactly one is
    accepted, the others get 416 with the session's Range; the blob is intact."""
    repo = 'race/session'
    data = random.Random(4).randbytes(200 * 1024)
    d = sha(data)
    with httpx.Client(base_url=srv.url) as c:
        r = c.post(f'/v2/{repo}/blobs/uploads/')
        assert r.status_code == 202
        location = r.headers['location']
    half = len(data) // 2

    def commit(i: int, c: httpx.Client, _: Any) -> httpx.Response:
        return c.patch(location, content=data[:half],
                       headers={**OCTET, 'Content-Range': f'0-{half - 1}'})

    results = race(8, lambda i, c: None, commit, srv.url)
    assert sorted(r.status_code for r in results) == [202] + [416] * 7, \
        [(r.status_code, r.content[:200]) for r in results]
    for r in results:
        if r.status_code == 416:
            assert_error(r, 416, 'BLOB_UPLOAD_INVALID')
            assert r.headers['range'] in ('0-0', f'0-{half - 1}')
    with httpx.Client(base_url=srv.url) as c:
        r = c.get(location)
        assert r.status_code == 204 and r.headers['range'] == f'0-{half - 1}'
        r = c.put(f'{location}?digest={d}', content=data[half:],
                  headers={**OCTET, 'Content-Range': f'{half}-{len(data) - 1}'})
        assert r.status_code == 201, r.content
        assert c.get(f'/v2/{repo}/blobs/{d}').content == data
    settled(srv)


# -- manifests and tags ----------------------------------------------------------------


def push_layers(c: httpx.Client, repo: str, seed: str) -> tuple[bytes, bytes]:
    config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'seed': seed,
                         'rootfs': {'type': 'layers', 'diff_ids': []}}).encode()
    layer = random.Random(seed).randbytes(4096)
    push_blob(c, repo, config)
    push_blob(c, repo, layer)
    return config, layer


def manifest(config: bytes, layer: bytes, **annotations: str) -> bytes:
    return json.dumps({
        'schemaVersion': 2,
        'mediaType': OCI_MANIFEST,
        'config': {'mediaType': OCI_CONFIG, 'digest': sha(config), 'size': len(config)},
        'layers': [{'mediaType': OCI_LAYER, 'digest': sha(layer), 'size': len(layer)}],
        **({'annotations': annotations} if annotations else {}),
    }).encode()


def put_manifest(c: httpx.Client, repo: str, reference: str, body: bytes
                 ) -> httpx.Response:
    return c.put(f'/v2/{repo}/manifests/{reference}', content=body,
                 headers={'Content-Type': OCI_MANIFEST})


def tag_target(c: httpx.Client, repo: str, tag: str) -> str | None:
    """The tag's digest, checked three ways: GET's body hashes to its
    Docker-Content-Digest, HEAD agrees, and the metadata row agrees."""
    r = c.get(f'/v2/{repo}/manifests/{tag}', headers={'Accept': OCI_MANIFEST})
    h = c.head(f'/v2/{repo}/manifests/{tag}', headers={'Accept': OCI_MANIFEST})
    if r.status_code == 404:
        assert_error(r, 404, 'MANIFEST_UNKNOWN')
        assert h.status_code == 404
        return None
    assert r.status_code == 200, r.content
    got = r.headers['docker-content-digest']
    assert sha(r.content) == got
    assert h.headers['docker-content-digest'] == got
    assert int(h.headers['content-length']) == len(r.content)
    return got


def test_same_manifest_same_tag(srv: Server) -> None:
    """16 clients PUT the same manifest by the same tag: one manifest row, one tag."""
    repo = 'race/manifest'
    with httpx.Client(base_url=srv.url) as c:
        config, layer = push_layers(c, repo, 'same')
    body = manifest(config, layer)
    d = sha(body)
    results = race(16, lambda i, c: None,
                   lambda i, c, _: put_manifest(c, repo, 'v1', body), srv.url)
    for r in results:
        assert r.status_code == 201, (r.status_code, r.content[:300])
        assert r.headers['docker-content-digest'] == d
        assert r.headers['location'] == f'/v2/{repo}/manifests/{d}'
    state = db_state(srv.root)
    assert [k for k in state.manifests if k[0] == repo] == [(repo, d)]
    assert state.manifests[(repo, d)] == (OCI_MANIFEST, body)
    assert state.refs[(repo, d)] == {sha(config), sha(layer)}
    assert {k: v for k, v in state.tags.items() if k[0] == repo} == {(repo, 'v1'): d}
    with httpx.Client(base_url=srv.url) as c:
        assert tag_target(c, repo, 'v1') == d
        assert c.get(f'/v2/{repo}/manifests/v1').content == body
        assert c.get(f'/v2/{repo}/tags/list').json()['tags'] == ['v1']
    settled(srv)


def test_different_manifests_same_tag(srv: Server) -> None:
    """8 clients PUT 8 different manifests by one tag: all stored, the tag names one
    of them, and every way of reading the tag agrees on which."""
    repo = 'race/tag'
    with httpx.Client(base_url=srv.url) as c:
        config, layer = push_layers(c, repo, 'different')
    bodies = [manifest(config, layer, n=str(i)) for i in range(8)]
    digests = [sha(b) for b in bodies]
    results = race(8, lambda i, c: None,
                   lambda i, c, _: put_manifest(c, repo, 'contested', bodies[i]), srv.url)
    for r, d in zip(results, digests, strict=True):
        assert r.status_code == 201, (r.status_code, r.content[:300])
        assert r.headers['docker-content-digest'] == d
    state = db_state(srv.root)
    assert sorted(k[1] for k in state.manifests if k[0] == repo) == sorted(digests)
    tagged = state.tags[(repo, 'contested')]
    assert tagged in digests
    with httpx.Client(base_url=srv.url) as c:
        assert tag_target(c, repo, 'contested') == tagged
        assert c.get(f'/v2/{repo}/manifests/contested').content == \
            bodies[digests.index(tagged)]
        for body, d in zip(bodies, digests, strict=True):
            r = c.get(f'/v2/{repo}/manifests/{d}')
            assert r.status_code == 200 and r.content == body
        assert c.get(f'/v2/{repo}/tags/list').json()['tags'] == ['contested']
    settled(srv)


def test_tag_moves_racing_manifest_deletes(srv: Server) -> None:
    """Tag moves between four manifests while one of them is deleted by digest: the
    tag never names a manifest that is gone."""
    repo = 'race/move-delete'
    with httpx.Client(base_url=srv.url) as c:
        config, layer = push_layers(c, repo, 'moves')
        bodies = [manifest(config, layer, m=str(i)) for i in range(4)]
        for b in bodies:
            assert put_manifest(c, repo, sha(b), b).status_code == 201
    doomed = sha(bodies[0])

    def commit(i: int, c: httpx.Client, _: Any) -> httpx.Response:
        if i % 4 == 3:
            return c.delete(f'/v2/{repo}/manifests/{doomed}')
        return put_manifest(c, repo, 'moving', bodies[i % 4])

    results = race(16, lambda i, c: None, commit, srv.url)
    for i, r in enumerate(results):
        assert r.status_code in ((202, 404) if i % 4 == 3 else (201,)), \
            (i, r.status_code, r.content[:200])
    with httpx.Client(base_url=srv.url) as c:
        target = tag_target(c, repo, 'moving')
        stored = {d for (r, d) in db_state(srv.root).manifests if r == repo}
        assert target is None or target in stored
        assert stored >= {sha(b) for b in bodies[1:]}
    settled(srv)


def test_fsck_clean_after_all(srv: Server) -> None:
    """After every race above: fsck finds nothing, not even a notice."""
    settled(srv)
    assert_fsck_clean(srv.root)
