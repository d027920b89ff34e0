"""`make run` installs only what serving needs; `make test` everything.

``scripts/setup.sh serve|test`` runs for real with a stand-in for the venv's
python (pip would need the network), the Makefile is asked what it would run, and
a real `oci-ref serve` answers requests with every test tool made unimportable.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from oci_ref.testing import Process, free_port, http_ready
from tests.support import push_image

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TEST_TOOLS = {'pytest', 'ruff', 'schemathesis', 'hypothesis', 'pyyaml'}
# What those install as importable modules.
TEST_MODULES = ('pytest', '_pytest', 'ruff', 'schemathesis', 'hypothesis', 'yaml')


def make_dry_run(target: str, venv: Path) -> str:
    if shutil.which('make') is None:
        pytest.fail('make is not installed')
    r = subprocess.run(['make', '-n', target, f'VENV={venv}'], cwd=REPO,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_make_run_sets_up_the_serve_install_and_make_test_the_test_install(tmp_path):
    run = make_dry_run('run', tmp_path / 'venv')
    assert 'scripts/setup.sh serve' in run
    assert 'setup.sh test' not in run
    assert f'{tmp_path}/venv/bin/oci-ref serve' in run
    assert 'scripts/setup.sh test' in make_dry_run('test', tmp_path / 'venv')
    assert 'scripts/setup.sh test' in make_dry_run('setup', tmp_path / 'venv')


def fake_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A directory with scripts/setup.sh and a .venv whose python records its
    arguments instead of running pip."""
    (tmp_path / 'scripts').mkdir()
    shutil.copy(REPO / 'scripts' / 'setup.sh', tmp_path / 'scripts' / 'setup.sh')
    calls = tmp_path / 'calls'
    python = tmp_path / '.venv' / 'bin' / 'python'
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    python.chmod(0o755)
    return tmp_path, calls


@pytest.mark.parametrize(('mode', 'spec', 'stamps'), [
    ('serve', '.', {'.installed-serve'}),
    ('test', '.[test]', {'.installed-serve', '.installed-test'}),
])
def test_setup_installs_the_package_with_or_without_the_test_extra(tmp_path, mode, spec,
                                                                   stamps):
    checkout, calls = fake_checkout(tmp_path)
    r = subprocess.run(['bash', 'scripts/setup.sh', mode], cwd=checkout,
                       env={'PATH': '/usr/bin:/bin', 'PYTHON': sys.executable},
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert calls.read_text().splitlines() == [
        '-m pip install -q --upgrade pip', f'-m pip install -q -e {spec}']
    assert {p.name for p in (checkout / '.venv').glob('.installed-*')} == stamps


def test_setup_refuses_an_unknown_mode(tmp_path):
    checkout, calls = fake_checkout(tmp_path)
    r = subprocess.run(['bash', 'scripts/setup.sh', 'everything'], cwd=checkout,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2
    assert 'usage: scripts/setup.sh [serve|test]' in r.stderr
    assert not calls.exists()


def test_the_serve_install_holds_no_test_tool():
    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']

    def names(deps: list[str]) -> set[str]:
        return {Requirement(dep).name.lower() for dep in deps}

    assert not names(project['dependencies']) & TEST_TOOLS
    assert {'pytest', 'ruff', 'schemathesis'} <= names(
        project['optional-dependencies']['test'])


BLOCK_TEST_TOOLS = '''
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in {modules!r}:
            raise ModuleNotFoundError(f'{{name}}: not in the serve install')
sys.meta_path.insert(0, Absent())
from oci_ref.cli import main
sys.exit(main(sys.argv[1:]))
'''


def test_serving_needs_no_test_tool(tmp_path):
    """`oci-ref serve` with pytest, ruff, schemathesis, hypothesis and yaml made
    unimportable takes a push and serves it back."""
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    code = BLOCK_TEST_TOOLS.format(modules=set(TEST_MODULES))
    server = Process.spawn([sys.executable, '-c', code, 'serve', '--listen',
                            f'127.0.0.1:{port}', '--root', str(tmp_path / 'data')],
                           log=tmp_path / 'serve.log', name='oci-ref')
    try:
        server.wait_ready(http_ready(url + '/healthz'))
        with httpx.Client(base_url=url, timeout=30) as c:
            _, body = push_image(c, 'serve/only', 'v1')
            assert c.get('/v2/serve/only/manifests/v1').content == body
            assert c.get('/openapi.yaml').status_code == 200
            assert c.get('/metrics').status_code == 200
    finally:
        server.stop()
    assert 'not in the serve install' not in server.log.read_text()


STAND_IN = '''#!/bin/sh
# A stand-in interpreter: Python {version}, ensurepip {venv}; `-m venv DIR` makes
# DIR/bin/python, which records its arguments (pip) in {calls}.
case "$1 $2" in
  "-c import ensurepip") [ {venv} = yes ];;
  "-c import sys; sys.exit(sys.version_info < (3, 11))") [ {version} != 3.10 ];;
  "-m venv")
    [ {venv} = yes ] || exit 1
    mkdir -p "$3/bin"
    printf '#!/bin/sh\\necho "$*" >> {calls}\\n' > "$3/bin/python"
    chmod +x "$3/bin/python"
    echo "$0" > "$3/made-by";;
  *) exit 3;;
esac
'''


def stand_in(path: Path, calls: Path, *, version: str, venv: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STAND_IN.format(version=version, venv='yes' if venv else 'no',
                                    calls=calls))
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(('system', 'chosen'), [
    ({'version': '3.11', 'venv': True}, 'system'),   # e.g. Debian's, PGO + LTO
    ({'version': '3.10', 'venv': True}, 'path'),     # too old
    ({'version': '3.11', 'venv': False}, 'path'),    # no python3-venv, no root + apt
    (None, 'path'),                                  # no system Python
])
def test_setup_prefers_the_system_python_when_it_can_make_the_venv(tmp_path, system,
                                                                   chosen):
    """scripts/setup.sh makes .venv with /usr/bin/python3 when it is >= 3.11 and can
    make a venv (a distribution's optimized build, issue 17), else with the first
    python3 on PATH. Here without apt-get on PATH: nothing is installed."""
    checkout = tmp_path / 'checkout'
    (checkout / 'scripts').mkdir(parents=True)
    shutil.copy(REPO / 'scripts' / 'setup.sh', checkout / 'scripts' / 'setup.sh')
    calls = tmp_path / 'calls'
    bin_dir = tmp_path / 'bin'  # the tools setup.sh uses, and python3; no apt-get
    bin_dir.mkdir()
    for tool in ('bash', 'dirname', 'id', 'rm', 'touch', 'mkdir', 'chmod'):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    path_python = stand_in(bin_dir / 'python3', calls, version='3.12', venv=True)
    system_python = tmp_path / 'usr' / 'bin' / 'python3'
    if system is not None:
        stand_in(system_python, calls, **system)
    r = subprocess.run(['bash', 'scripts/setup.sh', 'serve'], cwd=checkout,
                       env={'PATH': str(bin_dir), 'SYSTEM_PYTHON': str(system_python)},
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    made_by = (checkout / '.venv' / 'made-by').read_text().strip()
    assert made_by == str(system_python if chosen == 'system' else path_python)
    assert calls.read_text().splitlines() == [
        '-m pip install -q --upgrade pip', '-m pip install -q -e .']


def test_setup_takes_the_python_it_is_given(tmp_path):
    checkout = tmp_path / 'checkout'
    (checkout / 'scripts').mkdir(parents=True)
    shutil.copy(REPO / 'scripts' / 'setup.sh', checkout / 'scripts' / 'setup.sh')
    calls = tmp_path / 'calls'
    system_python = stand_in(tmp_path / 'system', calls, version='3.11', venv=True)
    given = stand_in(tmp_path / 'given', calls, version='3.12', venv=True)
    r = subprocess.run(['bash', 'scripts/setup.sh', 'serve'], cwd=checkout,
                       env={'PATH': '/usr/bin:/bin', 'PYTHON': str(given),
                            'SYSTEM_PYTHON': str(system_python)},
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert (checkout / '.venv' / 'made-by').read_text().strip() == str(given)
