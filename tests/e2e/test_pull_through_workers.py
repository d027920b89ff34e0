"""One upstream request per manifest, tag and blob across `--workers 2` (issue 13:
"20 clients pulling the same uncached image cause exactly one upstream GET per blob
and manifest (counted at the upstream), and all 20 get correct bytes").

First against tests/e2e/upstreams.py's Stub, because that test must hold the first
manifest request at the upstream until a second worker is provably asking for the
same manifest: the stub counts every request, and the mirror's
``oci_ref_upstream_fetch_waits`` gauge says a worker waits for another one's fetch.
Without the cross-worker single flight the second worker would ask the upstream
itself (the stub sees it at once and the test fails). Then against a real oci-ref
upstream in token mode, counted in its access log, with nothing held."""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.server
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e._helpers import write_bytes
from tests.e2e.faults import worker_pids
from tests.e2e.test_pull_through import ENV, mirror_config, upstream_requests
from tests.e2e.upstreams import Stub, answer, pusher, token_upstream
from tests.support import OCI_MANIFEST, Server, digest, image_manifest, push_blob

pytestmark = pytest.mark.e2e
CONFIG = json.dumps({'architecture': 'amd64', 'os': 'linux',
                     'rootfs': {'type': 'layers', 'diff_ids': []}}).encode()
LAYERS = [hashlib.sha256(b'workers-%d' % i).digest() * (n // 32)
          for i, n in enumerate((1024 * 1024, 64 * 1024))]
MANIFEST = json.dumps({
    'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
    'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',
               'digest': digest(CONFIG), 'size': len(CONFIG)},
    'layers': [{'mediaType': 'application/vnd.oci.image.layer.v1.tar',
                'digest': digest(b), 'size': len(b)} for b in LAYERS]}).encode()
M = digest(MANIFEST)
CLIENTS = 20
WAITS = re.compile(r'^oci_ref_upstream_fetch_waits\{upstream="stub.test"\} ([0-9.]+)$',
                   re.M)


def held_once(stub: Stub, inner: Callable[[http.server.BaseHTTPRequestHandler], None],
              first: threading.Event, again: threading.Event
              ) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    """The first request waits for ``stub.release``; a later one sets ``again``."""
    lock = threading.Lock()
    seen = [0]

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        with lock:
            seen[0] += 1
            n = seen[0]
        if n == 1:
            first.set()
            stub.release.wait(60)
        else:
            again.set()
        inner(h)
    return handle


@pytest.mark.parametrize('by', ['tag', 'digest', 'mixed'])
def test_twenty_clients_two_workers_one_upstream_request_each(
        tmp_path: Path, by: str) -> None:
    """``tag``: the tag's HEAD is held; ``digest``: the manifest's GET; ``mixed``:
    half the clients pull by tag, half by digest, and the manifest's GET is held
    until the tag's HEAD was answered (pulls by tag join the fetch by digest)."""
    stub = Stub()
    first, again, head_answered = threading.Event(), threading.Event(), \
        threading.Event()
    manifest = answer(200, MANIFEST, Content_Type=OCI_MANIFEST,
                      Docker_Content_Digest=M)
    by_tag, by_digest = '/v2/lib/app/manifests/v1', f'/v2/lib/app/manifests/{M}'

    def answered(h: http.server.BaseHTTPRequestHandler) -> None:
        manifest(h)
        head_answered.set()

    held = by_tag if by == 'tag' else by_digest
    stub.routes[by_tag] = answered
    stub.routes[held] = held_once(stub, manifest, first, again)
    if held != by_digest:
        stub.routes[by_digest] = manifest
    references = {'tag': ['v1'], 'digest': [M], 'mixed': ['v1', M]}[by]
    for blob in (CONFIG, *LAYERS):
        stub.routes[f'/v2/lib/app/blobs/{digest(blob)}'] = answer(200, blob)
    config = tmp_path / 'mirror.toml'
    config.write_text(f'[[upstream]]\nname = "stub.test"\nurl = "{stub.url}"\n'
                      'read_timeout = 90\n')
    results: list[bool] = []

    def pull(reference: str) -> None:
        """A whole image: the manifest, then its config and layers, each verified."""
        ok = False
        try:
            with httpx.Client(base_url=f'{m.url}/v2/stub.test/lib/app', timeout=90,
                              limits=httpx.Limits(max_keepalive_connections=0)) as c:
                r = c.get(f'/manifests/{reference}', headers={'Accept': OCI_MANIFEST})
                ok = r.status_code == 200 and r.content == MANIFEST and \
                    r.headers['docker-content-digest'] == M
                doc = json.loads(r.content) if ok else {'layers': [], 'config': {}}
                for d in [doc['config'], *doc['layers']]:
                    b = c.get(f'/blobs/{d["digest"]}')
                    ok = ok and b.status_code == 200 and digest(b.content) == d['digest']
        finally:
            results.append(ok)

    def both_workers_answer(c: httpx.Client) -> None:
        """Until each worker has answered a request (its wchar grew): a worker
        still starting on a loaded machine would leave every client to the other."""
        workers = worker_pids(m, 2)
        assert len(workers) == 2, workers
        before = {w: write_bytes(w) for w in workers}
        deadline = time.monotonic() + 120
        while any(write_bytes(w) == before[w] for w in workers):
            assert time.monotonic() < deadline, 'a worker never answered'
            c.get('/healthz', headers={'Connection': 'close'})

    def waiting(c: httpx.Client) -> float:
        found = WAITS.search(c.get('/metrics').text)
        return float(found.group(1)) if found else 0.0

    m = Server(tmp_path / 'data', '--workers', '2', '--config', str(config))
    threads: list[threading.Thread] = []
    try:
        with m.client() as c:
            both_workers_answer(c)

            def start() -> None:
                reference = references[len(threads) % len(references)]
                threads.append(threading.Thread(target=pull, args=(reference,),
                                                daemon=True))
                threads[-1].start()

            for _ in range(CLIENTS):
                start()
            deadline = time.monotonic() + 60
            # Polling the upstream and the gauge for what happened, not a sleep to
            # let it happen; more clients only while every one landed on one worker.
            while not again.is_set() and not (
                    first.is_set() and waiting(c) >= 1
                    and (by != 'mixed' or head_answered.is_set())):
                assert time.monotonic() < deadline, 'no request reached both workers'
                if len(threads) < 3 * CLIENTS:
                    start()
                time.sleep(0.05)
            assert not again.is_set(), 'a second worker asked the upstream itself'
        stub.release.set()
        for t in threads:
            t.join(120)
    finally:
        stub.release.set()
        m.stop()
        stub.stop()
    assert len(results) == len(threads) >= CLIENTS and all(results), results
    asked = [(meth, p) for meth, p, _ in stub.requests]
    want = [('HEAD', by_tag)] if by != 'digest' else []
    want += [('GET', by_digest)]
    want += [('GET', f'/v2/lib/app/blobs/{digest(b)}') for b in (CONFIG, *LAYERS)]
    assert sorted(asked) == sorted(want)


def test_twenty_clients_two_workers_real_upstream(tmp_path: Path) -> None:
    up = token_upstream(tmp_path / 'up')
    m: Server | None = None
    try:
        with pusher(up) as u:
            for b in (CONFIG, *LAYERS):
                push_blob(u, 'mirrored/workers', b)
            body = image_manifest(CONFIG, LAYERS)
            r = u.put('/v2/mirrored/workers/manifests/v1', content=body,
                      headers={'Content-Type': OCI_MANIFEST})
            assert r.status_code == 201, r.content
        m = Server(tmp_path / 'mirror', '--workers', '2', '--config',
                   str(mirror_config(tmp_path / 'm.toml', up.url)), env=ENV)
        base = f'{m.url}/v2/up.test/mirrored/workers'

        def pull(_: int) -> bool:
            with httpx.Client(base_url=base, timeout=90, limits=httpx.Limits(
                    max_keepalive_connections=0)) as c:
                r = c.get('/manifests/v1', headers={'Accept': OCI_MANIFEST})
                if r.status_code != 200 or r.content != body:
                    return False
                return all(digest(c.get(f'/blobs/{digest(b)}').content) == digest(b)
                           for b in (CONFIG, *LAYERS))

        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            assert all(pool.map(pull, range(CLIENTS)))
    finally:
        if m is not None:
            m.stop()
        up.stop()
    assert upstream_requests(up, 'HEAD', '/v2/mirrored/workers/manifests/v1') == 1
    assert upstream_requests(up, 'GET', '/v2/mirrored/workers/manifests/v1') == 0
    assert upstream_requests(
        up, 'GET', f'/v2/mirrored/workers/manifests/{digest(body)}') == 1
    for b in (CONFIG, *LAYERS):
        assert upstream_requests(up, 'GET', f'/v2/mirrored/workers/blobs/{digest(b)}') == 1
