"""Real clients (skopeo 1.9 and 1.18, crane, oras) pulling through a registry that
injects faults (--faults): each pull either succeeds, by retrying, with content
whose digests verify, or fails with the client's own error naming the cause; the
storage stays intact (fsck). Outcomes go to docs/clients-faults.md when
OCI_REF_CLIENT_TABLE names that file (see README "Fault injection")."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.faults import assert_fsck_clean
from tests.interop.conftest import find_client
from tests.interop.layout import write_image_layout
from tests.interop.util import push_layout, run
from tests.support import Server

pytestmark = [pytest.mark.interop]

CLIENTS = ['skopeo', 'skopeo-1.18', 'crane', 'oras']
CLIENT_PARAMS = [pytest.param(c, marks=getattr(pytest.mark, c.split('-')[0]))
                 for c in CLIENTS]
# (fault spec, what a failing client's error must name)
# xN: the first N requests of each method and path; a client that retries gets
# through, one that does not fails on the first.
SCENARIOS = {
    'blob-get:503=x1': r'503|Service Unavailable|unavailable',
    'manifest-get:429(1)=x1': r'429|Too Many Requests|toomanyrequests',
    'manifest-get+blob-get:500=x1': r'500|Internal Server Error',
    'blob-get:reset=x1': r'reset|EOF|connection|broken pipe',
    'blob-get:truncate=x1': r'digest|size|unexpected EOF|mismatch|verif|Content-Length',
    'blob-get:slow(2)=x1': r'timeout|deadline',
}
# Pushes: refusals come before a write is stored, a reset after (README).
PUSH_SCENARIOS = {
    'writes:503=x1': r'503|Service Unavailable|unavailable',
    'upload-start:429(1)=x1': r'429|Too Many Requests|toomanyrequests',
    'manifest-put:reset=x1': r'reset|EOF|connection|broken pipe',
    'upload-finish:reset=x1': r'reset|EOF|connection|broken pipe',
}
# Client bugs the faults reveal: (client, text of its output) -> the upstream report.
KNOWN_BUGS = {
    ('oras', 'panic: sync/atomic: compare and swap of inconsistently typed value'):
        'oras-go#916: two concurrent errors of different types panic in '
        'internal/syncutil (oras 1.2.0)',
}
SEED = '20261207'
_RESULTS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope='module')
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A storage root holding interop/faults:v1 (pushed with no faults), and its
    manifest digest; each test serves a copy of it."""
    base = tmp_path_factory.mktemp('faults-seed')
    layout = base / 'layout'
    write_image_layout(layout, 'v1', seed='faults ' * 4000)
    srv = Server(base / 'data')
    try:
        digest = push_layout(srv, layout, 'interop/faults', 'v1')
    finally:
        srv.stop()
    return base / 'data', digest


@pytest.fixture
def faulty(seeded: tuple[Path, str], tmp_path: Path, request: pytest.FixtureRequest
           ) -> Iterator[Server]:
    root = tmp_path / 'data'
    shutil.copytree(seeded[0], root, ignore=shutil.ignore_patterns('.metrics'))
    srv = Server(root, '--faults', request.param, '--faults-seed', SEED)
    yield srv
    srv.stop()
    assert_fsck_clean(root)


def pull(client: str, ref: str, out: Path, srv: Server) -> tuple[int, str]:
    """Pull ``ref`` into the OCI layout ``out`` (tag v1): (exit status, stderr)."""
    exe = find_client(client)
    if client.startswith('skopeo'):
        args = [exe, 'copy', '--src-tls-verify=false', '--retry-times', '3',
                f'docker://{ref}', f'oci:{out}:v1']
    elif client == 'crane':
        args = [exe, 'pull', '--insecure', '--format', 'oci', ref, str(out)]
    else:
        args = [exe, 'copy', '--from-plain-http', ref, '--to-oci-layout', f'{out}:v1']
    done = run(args, registry=srv, check=False, timeout=300)
    return done.returncode, done.stdout + done.stderr


def verify_layout(out: Path, digest: str) -> None:
    """Every blob in the layout hashes to its name; the pulled manifest is there."""
    blobs = list((out / 'blobs' / 'sha256').iterdir())
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    assert digest.split(':')[1] in {b.name for b in blobs}
    manifest = json.loads((out / 'blobs' / 'sha256' / digest.split(':')[1]).read_bytes())
    for desc in [manifest['config'], *manifest['layers']]:
        assert (out / 'blobs' / 'sha256' / desc['digest'].split(':')[1]).is_file()


@pytest.mark.parametrize('faulty', list(SCENARIOS), indirect=True)
@pytest.mark.parametrize('client', CLIENT_PARAMS)
def test_pull_through_faults(client: str, faulty: Server, seeded: tuple[Path, str],
                             tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """pull through injected faults: success with verified content, or a clear error"""
    if request.config.getoption('--registry') != 'oci-ref':
        pytest.skip('--faults and --variation are oci-ref settings')
    spec = request.node.callspec.params['faulty']
    out = tmp_path / 'out'
    code, output = pull(client, f'{faulty.host}/interop/faults:v1', out, faulty)
    injected = len(re.findall(r'fault \S+ on ', faulty.log.read_text()))
    if code == 0:
        verify_layout(out, seeded[1])
        outcome = f'ok ({injected} injected)'
    else:
        for (name, text), bug in KNOWN_BUGS.items():
            if name == client and text in output:
                _RESULTS[(client, spec)] = f'panics ({injected} injected): {bug}'
                pytest.xfail(f'{client}: {bug}')
        assert re.search(SCENARIOS[spec], output, re.I), output[-3000:]
        last = [line for line in output.strip().splitlines() if line.strip()][-1]
        last = last.strip()
        outcome = f'fails ({injected} injected): ' + (
            last if len(last) <= 150 else '…' + last[-150:])
    _RESULTS[(client, spec)] = outcome
    request.node.user_properties.append(('outcome', outcome))




def push(client: str, layout: Path, ref: str, srv: Server) -> tuple[int, str]:
    exe = find_client(client)
    if client.startswith('skopeo'):
        args = [exe, 'copy', '--dest-tls-verify=false', '--retry-times', '3',
                f'oci:{layout}:v1', f'docker://{ref}']
    elif client == 'crane':
        args = [exe, 'push', '--insecure', str(layout), ref]
    else:
        args = [exe, 'copy', '--from-oci-layout', f'{layout}:v1', '--to-plain-http', ref]
    done = run(args, registry=srv, check=False, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize('faulty', list(PUSH_SCENARIOS), indirect=True)
@pytest.mark.parametrize('client', CLIENT_PARAMS)
def test_push_through_faults(client: str, faulty: Server, tmp_path: Path,
                             request: pytest.FixtureRequest) -> None:
    """push through injected faults: stored whole, or a clear error"""
    if request.config.getoption('--registry') != 'oci-ref':
        pytest.skip('--faults is an oci-ref setting')
    spec = request.node.callspec.params['faulty']
    layout = tmp_path / 'layout'
    digest = write_image_layout(layout, 'v1', seed=f'push {client} {spec} ' * 500)
    code, output = push(client, layout, f'{faulty.host}/interop/pushed:v1', faulty)
    injected = len(re.findall(r'fault \S+ on ', faulty.log.read_text()))
    r = httpx.get(f'{faulty.url}/v2/interop/pushed/manifests/{digest}',
                  headers={'Accept': 'application/vnd.oci.image.manifest.v1+json'})
    if code == 0:
        assert r.status_code == 200
        assert 'sha256:' + hashlib.sha256(r.content).hexdigest() == digest
        outcome = f'ok ({injected} injected)'
    else:
        for (name, text), bug in KNOWN_BUGS.items():
            if name == client and text in output:
                _RESULTS[(client, 'push ' + spec)] = f'panics ({injected} injected): {bug}'
                pytest.xfail(f'{client}: {bug}')
        assert re.search(PUSH_SCENARIOS[spec], output, re.I), output[-3000:]
        last = [line for line in output.strip().splitlines() if line.strip()][-1].strip()
        outcome = f'fails ({injected} injected): ' + (
            last if len(last) <= 150 else '…' + last[-150:])
    _RESULTS[(client, 'push ' + spec)] = outcome
    request.node.user_properties.append(('outcome', outcome))


@pytest.mark.parametrize('client', CLIENT_PARAMS)
def test_retry_after_through_the_linter(client: str, seeded: tuple[Path, str],
                                        tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    """pull through a 429 with Retry-After: 2, with --lint: does the retry wait?"""
    if request.config.getoption('--registry') != 'oci-ref':
        pytest.skip('--faults and --lint are oci-ref settings')
    root = tmp_path / 'data'
    shutil.copytree(seeded[0], root, ignore=shutil.ignore_patterns('.metrics'))
    srv = Server(root, '--lint', '--faults', 'manifest-get:429(2)=x1',
                 '--faults-seed', SEED)
    try:
        code, output = pull(client, f'{srv.host}/interop/faults:v1', tmp_path / 'out',
                            srv)
        report = httpx.get(f'{srv.url}/lint/report').json()
    finally:
        srv.stop()
    retries = len(re.findall(r'"(?:GET|HEAD) /v2/interop/faults/manifests/v1 ',
                             srv.log.read_text()))
    ignored = sum(r['count'] for c in report['clients'] for r in c['rules']
                  if r['id'] == 'retry-after-ignored')
    if code != 0:
        assert re.search(r'429|Too Many Requests|toomanyrequests', output, re.I), output
        outcome = 'no retry (fails on the 429)'
    elif ignored:
        assert retries >= 2
        outcome = f'retries too early (lint: retry-after-ignored x{ignored})'
    else:
        assert retries >= 2
        outcome = 'retries after Retry-After (lint: clean)'
    _RESULTS[(client, 'lint')] = outcome
    request.node.user_properties.append(('outcome', outcome))


@pytest.fixture(scope='module', autouse=True)
def _table() -> Iterator[None]:
    yield
    target = os.environ.get('OCI_REF_CLIENT_TABLE')
    if not target or not _RESULTS:
        return
    lines = ['# Real clients against injected faults',
             '',
             'Generated by `OCI_REF_CLIENT_TABLE=docs/clients-faults.md .venv/bin/python '
             '-m pytest tests/interop/test_faults_clients.py` (seed '
             f'{SEED}, one pull or push of a one-layer image per cell). "ok" means '
             'the pull succeeded and every blob verified, or the pushed manifest is '
             'served; "fails" quotes the client\'s last line. Every cell ends with '
             '`oci-ref fsck` clean.',
             '',
             '| fault | ' + ' | '.join(CLIENTS) + ' |',
             '|---|' + '---|' * len(CLIENTS)]
    for spec in SCENARIOS:
        cells = [_RESULTS.get((c, spec), 'not run').replace('|', '\\|') for c in CLIENTS]
        lines.append(f'| pull `{spec}` | ' + ' | '.join(cells) + ' |')
    for spec in PUSH_SCENARIOS:
        cells = [_RESULTS.get((c, 'push ' + spec), 'not run').replace('|', '\\|')
                 for c in CLIENTS]
        lines.append(f'| push `{spec}` | ' + ' | '.join(cells) + ' |')
    cells = [_RESULTS.get((c, 'lint'), 'not run') for c in CLIENTS]
    lines.append('| pull `manifest-get:429(2)=x1` with `--lint`: does the retry wait? | '
                 + ' | '.join(cells) + ' |')
    Path(target).write_text('\n'.join(lines) + '\n')
