"""README's quick start runs as written, in order: its marked blocks (``<!--
readme-test: setup|serve|client -->`` before a ``sh`` block), the server on a free
port instead of 5000, the client commands in an empty directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from oci_ref.testing import Process, free_port, http_ready
from tests.e2e._helpers import port_refuses

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README = REPO / 'README.md'
BLOCK = re.compile(r'^<!-- readme-test: (\w+) -->\n```sh\n(.*?)^```', re.M | re.S)
DEFAULT_HOST = '127.0.0.1:5000'
IN_CI = os.environ.get('CI') == 'true'


def quick_start() -> list[tuple[str, str]]:
    return BLOCK.findall(README.read_text())


def commands(script: str) -> set[str]:
    """The programs a block runs: the first word of each command line."""
    return {line.split()[0] for line in script.splitlines()
            if line.strip() and not line.lstrip().startswith('#')}


def require(tools: set[str]) -> None:
    missing = sorted(t for t in tools if shutil.which(t) is None)
    if missing:
        message = f'the README quick start needs {", ".join(missing)} (make clients)'
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(['bash', '-euo', 'pipefail', '-c', script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_the_quick_start_blocks_are_marked_in_order():
    assert [kind for kind, _ in quick_start()] == ['setup', 'serve', 'client']
    for kind, script in quick_start():
        assert script.strip(), kind


def test_the_quick_start_runs_as_written(tmp_path):
    blocks = quick_start()
    require({'bash', 'make'} | set().union(*(commands(s) for _, s in blocks)))
    env = {k: v for k, v in os.environ.items() if not k.startswith('OCI_REF_')}
    for kind, script in blocks:
        if kind == 'setup':
            r = bash(script, REPO, env)
            assert r.returncode == 0, (script, r.stdout + r.stderr)

    # `make run` reads LISTEN and ROOT from the environment (`?=` in the Makefile).
    port = free_port()
    host = f'127.0.0.1:{port}'
    root = tmp_path / 'data'
    [serve] = [script for kind, script in blocks if kind == 'serve']
    server = Process.spawn(['bash', '-euo', 'pipefail', '-c', serve], cwd=REPO,
                           env={**env, 'LISTEN': host, 'ROOT': str(root)},
                           log=tmp_path / 'serve.log', name='make run')
    try:
        answers = http_ready(f'http://{host}/healthz')
        # Long enough for a first `scripts/setup.sh serve` when .venv is not set up.
        server.wait_ready(lambda: answers() and server.listens_on(port), timeout=900)
        # It says where the oci-ref command is, and that is true.
        hint = [line for line in server.log_tail(100_000).splitlines()
                if 'the oci-ref command is' in line]
        assert hint, server.log_tail()
        exe = REPO / re.search(r'is (\S+/oci-ref)', hint[0])[1]
        version = subprocess.run([str(exe), '--version'], capture_output=True, text=True,
                                 check=True)
        assert version.stdout.startswith('oci-ref ')

        work = tmp_path / 'work'
        work.mkdir()
        outputs = []
        for kind, script in blocks:
            if kind == 'client':
                r = bash(script.replace(DEFAULT_HOST, host), work, env)
                assert r.returncode == 0, (script, r.stdout + r.stderr)
                outputs.append(r.stdout)

        # What the commands claim happened, checked over HTTP and on disk.
        tags = httpx.get(f'http://{host}/v2/demo/app/tags/list').json()
        assert tags == {'name': 'demo/app', 'tags': ['v1']}
        assert re.search(r'"Tags": \[\s*"v1"\s*\]', ''.join(outputs)), outputs  # list-tags
        manifest = httpx.get(f'http://{host}/v2/demo/app/manifests/v1', headers={
            'Accept': 'application/vnd.oci.image.manifest.v1+json'}).json()
        assert len(manifest['layers']) == 1
        pulled = json.loads((work / 'pulled' / 'index.json').read_text())
        assert [m['annotations']['org.opencontainers.image.ref.name']
                for m in pulled['manifests']] == ['v1']
        assert (root / 'oci-ref.db').is_file()  # ROOT was honoured
    finally:
        server.stop()
    assert port_refuses(port)
