"""How long the web view takes to render a repository with 1,000 tags.

    python bench/ui.py [--tags 1000] [--reps 20]

Starts `oci-ref serve` on a free 127.0.0.1 port with fresh storage, pushes ``--tags``
distinct images (each its own config, so every row reads its own platform) and a
two-platform index, tags them, then times full GETs of the tag pages over one
keep-alive connection: the default page (100 tags), all 1,000 on one page by name
and by push time, and a manifest page. Prints the median and the slowest sample of
each (server render + loopback transfer, as a browser would wait for it).

Only the standard library and the project's venv (the server) are needed.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from oci_ref.testing import OCIRegistry

REPO = Path(__file__).resolve().parent.parent
MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
INDEX = 'application/vnd.oci.image.index.v1+json'
NAME = 'bench/many-tags'


def request(conn: http.client.HTTPConnection, method: str, path: str,
            body: bytes | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def push_blob(conn: http.client.HTTPConnection, data: bytes) -> dict[str, object]:
    digest = 'sha256:' + hashlib.sha256(data).hexdigest()
    status, _, _ = request(conn, 'POST', f'/v2/{NAME}/blobs/uploads/?digest={digest}',
                           data, {'Content-Type': 'application/octet-stream'})
    assert status == 201, status
    return {'digest': digest, 'size': len(data)}


def push_manifest(conn: http.client.HTTPConnection, reference: str, doc: dict[str, object],
                  media_type: str) -> tuple[str, int]:
    body = json.dumps(doc).encode()
    status, _, text = request(conn, 'PUT', f'/v2/{NAME}/manifests/{reference}', body,
                              {'Content-Type': media_type})
    assert status == 201, (status, text[:300])
    return 'sha256:' + hashlib.sha256(body).hexdigest(), len(body)


def seed(conn: http.client.HTTPConnection, tags: int) -> None:
    children = []
    for i in range(tags):
        arch = ('amd64', 'arm64', 'ppc64le', 's390x')[i % 4]
        config = push_blob(conn, json.dumps({
            'architecture': arch, 'os': 'linux', 'created': f'seed {i}',
            'rootfs': {'type': 'layers', 'diff_ids': []}}).encode())
        layer = push_blob(conn, f'layer {i}'.encode() * 50)
        digest, size = push_manifest(conn, f'v{i:04d}', {
            'schemaVersion': 2, 'mediaType': MANIFEST,
            'config': {'mediaType': 'application/vnd.oci.image.config.v1+json', **config},
            'layers': [{'mediaType': 'application/vnd.oci.image.layer.v1.tar+gzip',
                        **layer}],
            'annotations': {'org.opencontainers.image.version': str(i)}}, MANIFEST)
        if i < 2:
            children.append({'mediaType': MANIFEST, 'digest': digest, 'size': size,
                             'platform': {'os': 'linux', 'architecture': arch}})
    push_manifest(conn, 'multi', {'schemaVersion': 2, 'mediaType': INDEX,
                                  'manifests': children}, INDEX)


def timed(conn: http.client.HTTPConnection, path: str, reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        status, _, body = request(conn, 'GET', path)
        samples.append(time.perf_counter() - start)
        assert status == 200 and body.startswith(b'<!doctype html>'), (path, status)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tags', type=int, default=1000)
    parser.add_argument('--reps', type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix='oci-ref-ui-bench-'))
    # The project's one spawn-and-wait helper (oci_ref.testing).
    server = OCIRegistry(root / 'data', args=('--no-access-log', '--no-fsync'), cwd=REPO)
    try:
        conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=60)
        started = time.perf_counter()
        seed(conn, args.tags)
        print(f'seeded {args.tags} tagged images + 1 index in '
              f'{time.perf_counter() - started:.1f} s')
        pages = {
            'tags page, default (100 tags)': f'/ui/r/{NAME}/',
            f'all {args.tags} tags on one page, by name': f'/ui/r/{NAME}/?n=1000',
            f'all {args.tags} tags on one page, by push time':
                f'/ui/r/{NAME}/?n=1000&sort=pushed',
            'last page by push time (100 tags)':
                f'/ui/r/{NAME}/?sort=pushed&order=asc&page={max(1, -(-args.tags // 100))}',
            'index manifest view': f'/ui/r/{NAME}/-/m/multi',
            'repository list': '/ui/',
        }
        timed(conn, f'/ui/r/{NAME}/', 3)  # warm up: templates compiled, caches filled
        print(f'{"page":50} {"median":>9} {"max":>9}')
        for label, path in pages.items():
            samples = timed(conn, path, args.reps)
            print(f'{label:50} {statistics.median(samples) * 1000:7.1f}ms '
                  f'{max(samples) * 1000:7.1f}ms')
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
