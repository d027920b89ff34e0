"""The ``oci-ref`` command line: settings precedence observed on a running server,
refusal of bad settings, signals, access log, ``validate``, ``--version``, startup."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import oci_ref
from oci_ref.testing import free_port
from tests.e2e._helpers import Launched, Started, Stopwatch, port_refuses
from tests.support import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    image_manifest,
    push_image,
)

pytestmark = pytest.mark.e2e

ROOT_MARKER = 'oci-ref.db'


def ports(n: int) -> list[int]:
    found: list[int] = []
    while len(found) < n:
        p = free_port()
        if p not in found:
            found.append(p)
    return found


def listen(port: int) -> str:
    return f'127.0.0.1:{port}'


def tags_page(srv: Started, tags: int) -> httpx.Response:
    """Push one image under ``tags`` tags; return the tag list as first served."""
    with srv.client() as c:
        _, body = push_image(c, 'cfg/probe', 't0', seed='cfg')
        for i in range(1, tags):
            r = c.put(f'/v2/cfg/probe/manifests/t{i}', content=body,
                      headers={'Content-Type': OCI_MANIFEST})
            assert r.status_code == 201
        return c.get('/v2/cfg/probe/tags/list')


def assert_stores_in(root: Path, *elsewhere: Path) -> None:
    assert (root / ROOT_MARKER).is_file(), sorted(root.parent.iterdir())
    assert any((root / 'blobs' / 'sha256').rglob('*')), 'no blobs under the root'
    for other in elsewhere:
        assert not other.exists(), f'{other} was created'


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith('OCI_REF_')}
    return subprocess.run([sys.executable, '-m', 'oci_ref', *args], capture_output=True,
                          text=True, env={**clean, **(env or {})}, cwd=cwd,
                          timeout=timeout)


# -- settings precedence: flag > env > TOML file > default ------------------------------


def test_settings_flag_beats_env_beats_toml(tmp_path):
    """listen from all three sources -> the flag's; root from env and file -> env's;
    page_max from the file only -> the file's."""
    p_flag, p_env, p_toml = ports(3)
    cfg = tmp_path / 'oci-ref.toml'
    cfg.write_text(f'listen = "{listen(p_toml)}"\nroot = "{tmp_path / "toml-root"}"\n'
                   'page_max = 3\n')
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    srv = Launched(tmp_path, p_flag, ['--config', str(cfg), '--listen', listen(p_flag)],
                   {'OCI_REF_LISTEN': listen(p_env),
                    'OCI_REF_ROOT': str(tmp_path / 'env-root')}, cwd)
    try:
        assert port_refuses(p_env) and port_refuses(p_toml)
        r = tags_page(srv, 5)
        assert r.json()['tags'] == ['t0', 't1', 't2'], r.json()
        assert 'rel="next"' in r.headers.get('link', ''), r.headers
        assert_stores_in(tmp_path / 'env-root', tmp_path / 'toml-root', cwd / 'data')
    finally:
        srv.stop()


def test_settings_env_beats_toml_named_by_oci_ref_config(tmp_path):
    """The file named by OCI_REF_CONFIG: env beats it for listen and page_max; a
    flag beats env for root."""
    p_env, p_toml = ports(2)
    cfg = tmp_path / 'file.toml'
    cfg.write_text(f'listen = "{listen(p_toml)}"\nroot = "{tmp_path / "toml-root"}"\n'
                   'page_max = 3\n')
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    srv = Launched(tmp_path, p_env, ['--root', str(tmp_path / 'flag-root')],
                   {'OCI_REF_CONFIG': str(cfg), 'OCI_REF_LISTEN': listen(p_env),
                    'OCI_REF_ROOT': str(tmp_path / 'env-root'),
                    'OCI_REF_PAGE_MAX': '2'}, cwd)
    try:
        assert port_refuses(p_toml)
        r = tags_page(srv, 5)
        assert r.json()['tags'] == ['t0', 't1'], r.json()
        assert_stores_in(tmp_path / 'flag-root', tmp_path / 'env-root',
                         tmp_path / 'toml-root', cwd / 'data')
    finally:
        srv.stop()


def test_settings_toml_beats_defaults_and_defaults_fill_the_rest(tmp_path):
    """listen from the file; root defaults to ./data under the working directory;
    page_max defaults to 10000 (5 tags, one page, no Link)."""
    (p_toml,) = ports(1)
    cfg = tmp_path / 'only-listen.toml'
    cfg.write_text(f'listen = "{listen(p_toml)}"\naccess_log = false\n')
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    srv = Launched(tmp_path, p_toml, ['--config', str(cfg)], {}, cwd)
    try:
        r = tags_page(srv, 5)
        assert r.json()['tags'] == ['t0', 't1', 't2', 't3', 't4'], r.json()
        assert 'link' not in r.headers
        assert_stores_in(cwd / 'data')
    finally:
        srv.stop()
    # access_log = false from the file: no per-request lines.
    assert '"GET /v2/cfg/probe/tags/list' not in srv.log.read_text()


INVALID = [
    pytest.param(['--workers', '0'], {}, None, 'workers', id='workers-0-flag'),
    pytest.param(['--workers', 'two'], {}, None, 'workers', id='workers-not-int'),
    pytest.param([], {'OCI_REF_PAGE_MAX': 'lots'}, None, 'page_max', id='page-max-env'),
    pytest.param([], {'OCI_REF_ACCESS_LOG': 'sometimes'}, None, 'access_log',
                 id='bool-env'),
    pytest.param(['--manifest-max-bytes', '1024'], {}, None, 'manifest_max_bytes',
                 id='manifest-limit-below-spec'),
    pytest.param(['--listen', 'localhost'], {}, None, 'listen', id='listen-no-port'),
    pytest.param(['--listen', '127.0.0.1:99999'], {}, None, 'listen',
                 id='listen-port-range'),
    pytest.param([], {}, 'colour = "blue"\n', 'colour', id='toml-unknown-key'),
    pytest.param([], {}, 'page_max = [\n', 'config file', id='toml-syntax'),
    pytest.param([], {}, 'workers = 0\n', 'workers', id='toml-invalid-value'),
    pytest.param(['--config', '/nonexistent/oci-ref.toml'], {}, None, 'cannot read',
                 id='config-missing'),
]


@pytest.mark.parametrize(('args', 'env', 'toml', 'message'), INVALID)
def test_invalid_setting_exits_nonzero_with_a_message(tmp_path, args, env, toml, message):
    root = tmp_path / 'root'
    base = ['serve', '--root', str(root)]
    if '--listen' not in args:
        base += ['--listen', listen(free_port())]
    if toml is not None:
        cfg = tmp_path / 'bad.toml'
        cfg.write_text(toml)
        base += ['--config', str(cfg)]
    r = run_cli(*base, *args, env=env, timeout=20)
    assert r.returncode != 0, r
    assert message in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    assert not root.exists(), 'a refused configuration must not touch the root'


# -- signals, access log, startup ------------------------------------------------------


@pytest.mark.parametrize('workers', ['1', '2'])
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_stops_server_with_exit_code_0(tmp_path, sig, workers):
    """Ctrl-C and `docker stop`/systemd: a clean exit (code 0) within a few seconds,
    even with an idle keep-alive connection open."""
    srv = Started(tmp_path / 'data', '--workers', workers)
    try:
        with srv.client() as c:
            push_image(c, 'sig/repo', 'v1')
            os.kill(srv.proc.pid, sig)
            with Stopwatch() as t:
                try:
                    rc = srv.proc.wait(timeout=8)
                except subprocess.TimeoutExpired:
                    rc = None
    finally:
        srv.stop()
    log = srv.log.read_text()
    assert rc == 0, (rc, log[-2000:])
    assert t.seconds < 5, t.seconds
    assert 'Traceback' not in log, log[-3000:]


def test_access_log_has_one_line_per_request(tmp_path):
    srv = Started(tmp_path / 'data')
    try:
        marks = []
        with srv.client() as c:
            def go(method: str, path: str, status: int, **kw: object) -> httpx.Response:
                mark = f'probe-{len(marks)}'
                sep = '&' if '?' in path else '?'
                r = c.request(method, f'{path}{sep}probe={mark}', **kw)  # type: ignore[arg-type]
                assert r.status_code == status, (method, path, r.content)
                marks.append((mark, method, status))
                return r

            go('GET', '/v2/', 200)
            go('HEAD', '/v2/', 200)
            r = go('POST', '/v2/log/repo/blobs/uploads/', 202)
            loc = r.headers['location']
            r = go('PATCH', loc, 202, content=iter([b'abc', b'def']))
            go('PUT', r.headers['location'] + '?digest=sha256:' + '0' * 64, 400)
            go('GET', '/v2/log/repo/blobs/sha256:' + '1' * 64, 404)
            go('DELETE', '/v2/', 405)
            go('GET', '/v2/_catalog', 200)
        # uvicorn logs (and flushes) a request before its response is sent, so
        # the lines are there now; allow a moment anyway.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = srv.log.read_text()
            if all(mark_re(m).search(text) for m, _, _ in marks):
                break
            time.sleep(0.05)
    finally:
        srv.stop()
    lines = srv.log.read_text().splitlines()
    for mark, method, status in marks:
        hits = [ln for ln in lines if mark_re(mark).search(ln)]
        assert len(hits) == 1, (mark, hits, lines[-30:])
        assert f'"{method} ' in hits[0] and f'" {status} ' in hits[0] + ' ', hits[0]


def mark_re(mark: str) -> re.Pattern[str]:
    return re.compile(rf'probe={re.escape(mark)}(?![0-9])')


@pytest.mark.parametrize('workers', ['1', '2'])
def test_startup_time_to_first_ping_is_measured(tmp_path, capsys, workers):
    """Process start -> first 200 on /v2/ (printed; speed belongs to benchmarks)."""
    with Stopwatch() as t:
        srv = Started(tmp_path / 'data', '--workers', workers)
    try:
        with capsys.disabled():
            print(f'\n[measure] startup to first 200 on /v2/ ({workers} worker(s)): '
                  f'{t.seconds * 1000:.0f} ms')
        assert srv.proc.poll() is None
        r = httpx.get(srv.url + '/v2/', timeout=5)
        assert r.status_code == 200 and r.json() == {}
    finally:
        srv.stop()


# -- validate and --version ------------------------------------------------------------


CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'


def test_validate_valid_files_exit_0(tmp_path):
    manifest = tmp_path / 'manifest.json'
    manifest.write_bytes(image_manifest(CONFIG, [b'layer']))
    index = tmp_path / 'index.json'
    index.write_text(json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX,
                                 'manifests': [descriptor(OCI_MANIFEST, b'{}')]}))
    config = tmp_path / 'config.json'
    config.write_bytes(CONFIG)
    r = run_cli('validate', str(manifest), str(index))
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f'{manifest}: ok' in r.stdout and f'{index}: ok' in r.stdout
    r = run_cli('validate', '--media-type', OCI_CONFIG, str(config))
    assert r.returncode == 0, (r.stdout, r.stderr)


def bad_manifest() -> dict[str, object]:
    return {
        'schemaVersion': 3,
        'mediaType': OCI_MANIFEST,
        'config': {'mediaType': OCI_CONFIG, 'digest': 'sha256:NOTHEX', 'size': -1},
        'layers': [],
    }


def test_validate_invalid_manifest_prints_each_failed_rule_with_its_spec_section(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(bad_manifest()))
    r = run_cli('validate', str(bad))
    assert r.returncode != 0, r.stdout
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(f'{bad}: ')]
    by_path = {ln.split(': ')[1]: ln for ln in lines}
    assert {'/schemaVersion', '/config/digest', '/config/size'} <= set(by_path), r.stdout
    for where in ('/schemaVersion', '/config/digest', '/config/size'):
        line = by_path[where]
        assert line.endswith(']') and '[' in line, line
        spec = line[line.rindex('[') + 1:-1]
        assert 'spec' in spec and '§' in spec, line
    # The same as JSON lines.
    r = run_cli('validate', '--json', str(bad))
    assert r.returncode != 0
    problems = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
    assert {p['path'] for p in problems} >= {'/schemaVersion', '/config/digest',
                                              '/config/size'}
    for p in problems:
        assert p['file'] == str(bad) and p['rule'] and '§' in p['spec'], p


@pytest.mark.parametrize('content', [b'\x00not json{', b'[]', b''],
                         ids=['garbage', 'json-array', 'empty'])
def test_validate_non_manifest_fails_with_a_rule(tmp_path, content):
    bad = tmp_path / 'not-a-manifest.json'
    bad.write_bytes(content)
    r = run_cli('validate', str(bad))
    assert r.returncode != 0, r.stdout
    lines = r.stdout.splitlines()
    assert lines and all(ln.startswith(f'{bad}: /') for ln in lines), r.stdout
    assert all(ln.endswith(']') and '§' in ln for ln in lines), r.stdout


def test_validate_strict_adds_the_shoulds(tmp_path):
    """An image with no layers keeps every MUST; --strict names the SHOULD it bends."""
    doc = tmp_path / 'no-layers.json'
    doc.write_bytes(image_manifest(CONFIG, []))
    r = run_cli('validate', str(doc))
    assert r.returncode == 0, r.stdout
    r = run_cli('validate', '--strict', str(doc))
    assert r.returncode == 1, r.stdout
    assert r.stdout.strip() == (f'{doc}: /layers: S-2: for portability, layers SHOULD have '
                                'at least one entry (an artifact without content uses the '
                                'empty descriptor) [image-spec manifest.md §Image Manifest '
                                'Property Descriptions: layers] (strict)')
    r = run_cli('validate', '--strict', '--json', str(doc))
    (problem,) = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert problem['mode'] == 'strict' and problem['path'] == '/layers'


def test_validate_unreadable_file_exits_nonzero(tmp_path):
    good = tmp_path / 'good.json'
    good.write_bytes(image_manifest(CONFIG, []))
    missing = tmp_path / 'missing.json'
    for target in (missing, tmp_path):
        r = run_cli('validate', str(good), str(target))
        assert r.returncode != 0, (target, r.stdout)
        assert f'{target}: cannot read' in r.stdout + r.stderr, (r.stdout, r.stderr)
        # The other file is still checked.
        assert f'{good}: ok' in r.stdout
        assert 'Traceback' not in r.stderr


def test_version_flag_prints_the_package_version():
    r = run_cli('--version')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f'oci-ref {oci_ref.__version__}'
    script = Path(sys.executable).parent / 'oci-ref'
    r = subprocess.run([str(script), '--version'], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == f'oci-ref {oci_ref.__version__}'
