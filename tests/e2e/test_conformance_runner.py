"""conformance/run.py: server lifecycle, environment, results and exit codes.

A stand-in suite program plays the suites' part here, so the runner's own logic
(what fails a run, the skip list, missing runners) can be driven case by case: it
really talks to the registry the runner started (through the same environment
variables the suites read) and writes JUnit as they do. The real suites run in
tests/e2e/test_conformance.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = '''#!{python}
import hashlib, os, sys, urllib.error, urllib.request
legacy = 'OCI_ROOT_URL' in os.environ
url = os.environ['OCI_ROOT_URL'] if legacy else 'http://' + os.environ['OCI_REGISTRY']
repo = os.environ['OCI_NAMESPACE' if legacy else 'OCI_REPO1']
out = os.environ['OCI_REPORT_DIR' if legacy else 'OCI_RESULTS_DIR']

def status(method, path, data=None):
    req = urllib.request.Request(url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers

cases = []
# A fresh registry: nothing in the repository yet.
cases.append(('fresh', status('GET', f'/v2/{{repo}}/tags/list')[0] == 404))
code, headers = status('POST', f'/v2/{{repo}}/blobs/uploads/')
digest = 'sha256:' + hashlib.sha256(b'x').hexdigest()
put = status('PUT', headers['Location'] + '?digest=' + digest, b'x')[0]
ok = code == 202 and put == 201
cases.append(('push', ok))
cases.append(('forced', os.environ.get('STAND_IN_FAIL') != '1'))
skip = os.environ.get('STAND_IN_SKIP')
with open(os.path.join(out, 'junit.xml'), 'w') as f:
    f.write('<testsuites><testsuite name="stand-in" tests="%d">' % len(cases))
    for name, passed in cases:
        # The legacy suite marks failures with an element, the redesigned one
        # with a status attribute only.
        body = '' if passed else '<failure/>'
        status = 'passed' if passed else 'failure'
        if os.environ.get('STAND_IN_STYLE') == 'status':
            body = ''
        f.write('<testcase name="%s" status="%s">%s</testcase>' % (name, status, body))
    if skip:
        f.write('<testcase name="%s"><skipped/></testcase>' % skip)
    f.write('<testcase name="html custom reporter"/></testsuite></testsuites>')
for name in ('report.html', 'results.yaml'):
    with open(os.path.join(out, name), 'w') as f:
        f.write(name)
with open(os.path.join(out, 'env.txt'), 'w') as f:
    f.write(repr(sorted(k for k in os.environ if k.startswith('OCI_'))))
sys.exit(0 if all(p for _, p in cases) else 1)
'''


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / 'stand-in-suite'
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(0o755)
    return path


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith('CONFORMANCE_')}
    # No real binaries from the default folder: only what the test gives.
    environ.update(CONFORMANCE_ENGINE='none', CONFORMANCE_DIR=str(tmp_path / 'none'),
                   **env)
    return subprocess.run(
        [sys.executable, str(ROOT / 'conformance' / 'run.py'),
         '--results', str(tmp_path / 'results'), *args],
        capture_output=True, text=True, env=environ, timeout=120)


def test_runs_every_suite_and_mode_on_a_fresh_registry_and_writes_results(
        tmp_path: Path, suite: Path) -> None:
    done = run(tmp_path, '--runs', 'legacy,1.1,dev', CONFORMANCE_BIN=str(suite),
               CONFORMANCE_LEGACY_BIN=str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    results = tmp_path / 'results'
    assert (results / 'summary.txt').read_text().splitlines() == [
        f'{s}: PASS 3 passed, 0 failed, 0 errors, 0 skipped of 3'
        for s in ('legacy', '1.1', 'dev')
    ]
    for s in ('legacy', '1.1', 'dev'):
        assert (results / f'{s}.summary').read_text().startswith(f'{s}: PASS')
        for name in ('junit.xml', 'suite.log', 'server.log', 'run.json'):
            assert (results / s / name).is_file(), (s, name)
        # The server really served the suite: its log has the requests.
        assert 'POST /v2/conformance/' in (results / s / 'server.log').read_text()
    legacy_env = (results / 'legacy' / 'env.txt').read_text()
    assert 'OCI_CROSSMOUNT_NAMESPACE' in legacy_env and 'OCI_TEST_PUSH' in legacy_env
    assert 'OCI_VERSION' in (results / 'dev' / 'env.txt').read_text()
    # docs/conformance.md is generated from these files.
    report = subprocess.run(
        [sys.executable, str(ROOT / 'scripts' / 'conformance-report.py'), str(results)],
        capture_output=True, text=True, check=True).stdout
    rows = [line for line in report.splitlines() if line.startswith('| `')]
    assert [r.split(' | ')[0] for r in rows] == ['| `legacy`', '| `1.1`', '| `dev`']
    assert all(' | ✅ 3 | 0 | 0 | ' in r for r in rows), rows


def summary(tmp_path: Path, run: str) -> str:
    return (tmp_path / 'results' / f'{run}.summary').read_text().strip()


@pytest.mark.parametrize('style', ['element', 'status'])
def test_a_failing_suite_fails_the_run(tmp_path: Path, suite: Path, style: str) -> None:
    done = run(tmp_path, '--runs', 'dev', CONFORMANCE_BIN=str(suite), STAND_IN_FAIL='1',
               STAND_IN_STYLE=style)
    assert done.returncode == 1
    assert summary(tmp_path, 'dev') == (
        'dev: FAIL 2 passed, 1 failed, 0 errors, 0 skipped of 3')
    assert '  failed: forced' in done.stdout


@pytest.mark.parametrize(('runs', 'verdict'), [('1.1', 'PASS'), ('dev', 'FAIL')])
def test_a_skip_passes_only_where_the_skip_list_allows_it(
        tmp_path: Path, suite: Path, runs: str, verdict: str) -> None:
    """The README's list allows the upload-cancel skip in `1.1` mode, not in `dev`."""
    name = 'OCI Conformance Test/sha256 blobs/post cancel/blob-post-cancel'
    done = run(tmp_path, '--runs', runs, CONFORMANCE_BIN=str(suite), STAND_IN_SKIP=name)
    assert done.returncode == (0 if verdict == 'PASS' else 1), done.stdout
    line = f'{runs}: {verdict} 3 passed, 0 failed, 0 errors, 1 skipped of 4'
    if verdict == 'FAIL':
        line += '; 1 skips not on the skip list'
        assert f'  skipped, not on the skip list: {name}' in done.stdout
    assert summary(tmp_path, runs) == line


def test_the_skip_list_has_a_reason_for_every_entry() -> None:
    runner_dir = ROOT / 'conformance'
    text = (runner_dir / 'README.md').read_text()
    table = text[text.index('<!-- skip-list -->'):text.index('<!-- /skip-list -->')]
    rows = [r for r in table.splitlines() if r.startswith('| `')]
    assert rows, table
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert len(cells) == 3 and len(cells[2]) > 30, row


def test_a_run_without_a_runner_fails_the_run(tmp_path: Path, suite: Path) -> None:
    done = run(tmp_path, '--runs', 'legacy,dev', CONFORMANCE_BIN=str(suite))
    assert done.returncode == 1
    assert 'legacy: not run' in done.stdout
    assert 'dev: PASS' in done.stdout


def test_a_registry_that_does_not_start_fails_its_run_and_not_the_others(
        tmp_path: Path, suite: Path) -> None:
    """Its run reports why; the runner neither crashes nor leaves the other runs."""
    done = run(tmp_path, '--runs', '1.1,dev', CONFORMANCE_BIN=str(suite),
               # A setting oci-ref refuses at start, for every run.
               OCI_REF_PAGE_MAX='0')
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'Traceback' not in done.stderr, done.stderr
    for name in ('1.1', 'dev'):
        line = summary(tmp_path, name)
        assert line.startswith(f'{name}: FAIL 0 passed, 0 failed, 1 errors'), line
        assert 'the registry did not start (oci-ref exited with status' in line, line
        log = (tmp_path / 'results' / name / 'suite.log').read_text()
        assert 'page sizes must be at least 1' in log, log


def test_without_any_runner_it_says_what_to_install(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 2
    for name in ('CONFORMANCE_DIR', 'CONFORMANCE_LEGACY_BIN', 'CONFORMANCE_BIN',
                 'CONFORMANCE_ENGINE'):
        assert name in done.stderr


def test_the_oci_conformance_entry_comes_from_the_all_run(tmp_path: Path, suite: Path
                                                          ) -> None:
    entry = tmp_path / 'entry' / 'distribution-spec' / 'v1.1' / 'oci-ref'
    done = run(tmp_path, '--runs', 'dev', '--submission', str(tmp_path / 'entry'),
               CONFORMANCE_BIN=str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'no oci-conformance entry: it comes from the `all` run' in done.stdout
    assert not entry.exists()
    done = run(tmp_path, '--runs', 'all', '--submission', str(tmp_path / 'entry'),
               CONFORMANCE_BIN=str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in entry.iterdir()) == [
        'PRODUCT.yaml', 'README.md', 'junit.xml', 'report.html', 'results.yaml']
    readme = (entry / 'README.md').read_text()
    assert 'export OCI_DATA_SPARSE="true"' in readme and '--sparse-manifests' in readme
    assert 'type: distribution' in (entry / 'PRODUCT.yaml').read_text()


@pytest.mark.engines
@pytest.mark.parametrize('blobs', ['s3', 'fs'])
def test_replicas_runs_each_suite_through_replicas_behind_haproxy(
        tmp_path: Path, suite: Path, blobs: str) -> None:
    """--replicas 2 (make conformance REPLICAS=2): the stand-in's POST and PUT go
    round-robin to both replicas, on PostgreSQL (+ S3), and the run says so."""
    import json

    from tests.engines import missing
    from tests.replicas import EngineMissing, check_engines

    try:
        check_engines(blobs)  # else a skip, or a failure under CI=true
    except EngineMissing as ex:
        missing(str(ex))
    done = run(tmp_path, '--runs', '1.1', '--replicas', '2', '--blobs', blobs,
               CONFORMANCE_BIN=str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    where = 'S3 (moto)' if blobs == 's3' else 'a shared filesystem'
    target = f'2 replicas on PostgreSQL + {where} behind haproxy'
    assert f'each run through {target}' in done.stdout
    assert summary(tmp_path, '1.1') == '1.1: PASS 3 passed, 0 failed, 0 errors, 0 ' \
                                       'skipped of 3'
    meta = json.loads((tmp_path / 'results' / '1.1' / 'run.json').read_text())
    assert meta['target'] == target
    report = subprocess.run(
        [sys.executable, str(ROOT / 'scripts' / 'conformance-report.py'),
         str(tmp_path / 'results')], capture_output=True, text=True, check=True).stdout
    assert report.startswith('# Upstream conformance results through replicas\n')
    assert f'- target: {target}\n' in report
    for i in range(2):
        log = (tmp_path / 'results' / '1.1' / f'server-{i}.log').read_text()
        assert ' /v2/conformance/org/repo1/blobs/uploads/' in log, (i, log)
