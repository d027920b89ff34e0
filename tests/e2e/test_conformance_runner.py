"""conformance/run.py: server lifecycle, environment, results and exit codes.

The upstream suites cannot be fetched in CI, so a stand-in suite program plays
their part here: it really talks to the registry the runner started (through the
same environment variables the suites read) and writes JUnit as they do. The real
suites are run with `make conformance CONFORMANCE_BIN=… CONFORMANCE_LEGACY_BIN=…`.
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
with open(os.path.join(out, 'junit.xml'), 'w') as f:
    f.write('<testsuites><testsuite name="stand-in" tests="%d">' % len(cases))
    for name, passed in cases:
        body = '' if passed else '<failure/>'
        f.write('<testcase name="%s">%s</testcase>' % (name, body))
    f.write('<testcase name="html custom reporter"/></testsuite></testsuites>')
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
    environ.update(CONFORMANCE_ENGINE='none', **env)
    return subprocess.run(
        [sys.executable, str(ROOT / 'conformance' / 'run.py'),
         '--results', str(tmp_path / 'results'), *args],
        capture_output=True, text=True, env=environ, timeout=120)


def test_runs_every_suite_and_mode_on_a_fresh_registry_and_writes_results(
        tmp_path: Path, suite: Path) -> None:
    done = run(tmp_path, CONFORMANCE_BIN=str(suite), CONFORMANCE_LEGACY_BIN=str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    results = tmp_path / 'results'
    assert (results / 'summary.txt').read_text().splitlines() == [
        f'{s}: PASS 3 passed, 0 failed, 0 errors, 0 skipped of 3'
        for s in ('legacy', '1.1', 'dev')
    ]
    for s in ('legacy', '1.1', 'dev'):
        assert (results / f'{s}.summary').read_text().startswith(f'{s}: PASS')
        for name in ('junit.xml', 'suite.log', 'server.log'):
            assert (results / s / name).is_file(), (s, name)
        # The server really served the suite: its log has the requests.
        assert 'POST /v2/conformance/' in (results / s / 'server.log').read_text()
    legacy_env = (results / 'legacy' / 'env.txt').read_text()
    assert 'OCI_CROSSMOUNT_NAMESPACE' in legacy_env and 'OCI_TEST_PUSH' in legacy_env
    assert 'OCI_VERSION' in (results / 'dev' / 'env.txt').read_text()


def test_a_failing_suite_fails_the_run(tmp_path: Path, suite: Path) -> None:
    done = run(tmp_path, '--suites', 'dev', CONFORMANCE_BIN=str(suite), STAND_IN_FAIL='1')
    assert done.returncode == 1
    assert done.stdout.strip() == 'dev: FAIL 2 passed, 1 failed, 0 errors, 0 skipped of 3'


def test_a_suite_without_a_runner_fails_the_run(tmp_path: Path, suite: Path) -> None:
    done = run(tmp_path, CONFORMANCE_BIN=str(suite))
    assert done.returncode == 1
    assert 'legacy: not run' in done.stdout
    assert 'dev: PASS' in done.stdout


def test_without_any_runner_it_says_what_to_install(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 2
    assert 'CONFORMANCE_LEGACY_BIN' in done.stderr and 'CONFORMANCE_BIN' in done.stderr
    assert 'docker or podman' in done.stderr
