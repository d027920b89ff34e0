"""SIGKILL of oci-ref while it pulls a blob through (issue 13: "SIGKILL of oci-ref
during a pull-through leaves no partial blob visible after restart (fsck clean)").

The upstream is tests/e2e/upstreams.py's Stub, because the kill must land mid-blob:
it sends half the blob and holds the rest. After the kill the half is in a spool
only; after a restart on the same root the blob is unknown while the upstream has
lost it (404, never the half) and pulls whole and verified once it has it again,
at once (the dead process's download claim does not hold the new one back), and
fsck is clean before and after."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.faults import descendants, kill_server, spools
from tests.e2e.upstreams import Stub, answer
from tests.support import Server, digest

pytestmark = pytest.mark.e2e
DATA = hashlib.sha256(b'sigkill').digest() * (2 * 1024 * 1024 // 32)  # 2 MiB
D = digest(DATA)
PATH = f'/v2/lib/app/blobs/{D}'


def fsck_clean(root: Path, config: Path) -> None:
    """`oci-ref fsck` exits 0 and reports nothing at all."""
    r = subprocess.run([sys.executable, '-m', 'oci_ref', 'fsck', '--root', str(root),
                        '--config', str(config), '--json'],
                       capture_output=True, timeout=300, check=False, text=True)
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert r.returncode == 0 and len(lines) == 1, r.stdout + r.stderr


def blob_files(root: Path) -> list[Path]:
    return list((root / 'blobs').rglob(D.split(':')[1])) if (root / 'blobs').exists() \
        else []


@pytest.mark.parametrize('workers', ['1', '2'])
def test_sigkill_mid_blob_leaves_no_partial_blob(tmp_path: Path, workers: str) -> None:
    stub = Stub()
    # The rest never comes: the mirror is killed meanwhile.
    sent_half = stub.hold(PATH, DATA, len(DATA) // 2, wait=60, finish=False)
    config = tmp_path / 'mirror.toml'
    config.write_text(f'[[upstream]]\nname = "stub.test"\nurl = "{stub.url}"\n')
    root = tmp_path / 'data'
    url = f'/v2/stub.test{PATH[3:]}'
    m = Server(root, '--workers', workers, '--config', str(config))
    try:
        received = 0
        with m.client() as c, c.stream('GET', url) as r:
            assert r.status_code == 200
            assert int(r.headers['content-length']) == len(DATA)
            chunks = r.iter_raw()
            while received == 0 or not sent_half.is_set():
                received += len(next(chunks))
            kill_server(m, descendants(m.proc.pid))
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in chunks:
                    received += len(chunk)
        assert 0 < received < len(DATA)
    finally:
        stub.release.set()
        m.stop()
    # Killed mid-blob: the bytes so far are in a spool, nothing is a blob.
    assert spools(root) and not blob_files(root)
    fsck_clean(root, config)
    stub.routes[PATH] = answer(404)  # the upstream lost it meanwhile
    m = Server(root, '--workers', workers, '--config', str(config))
    try:
        with m.client() as c:
            for method in ('HEAD', 'GET'):
                r = c.request(method, url)
                assert r.status_code == 404, (method, r.status_code, r.content[:300])
            stub.routes[PATH] = answer(200, DATA)
            r = c.head(url)
            assert r.status_code == 200 and r.headers['content-length'] == str(len(DATA))
            r = c.get(url)
            assert r.status_code == 200 and r.content == DATA
    finally:
        m.stop()
        stub.stop()
    (stored,) = blob_files(root)
    assert stored.read_bytes() == DATA
    fsck_clean(root, config)
