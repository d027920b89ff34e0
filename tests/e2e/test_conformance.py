"""The real upstream conformance suites gate every change (conformance/README.md).

Every run of conformance/run.py (the legacy v1.1.1 suite both ways, the redesigned
suite in `1.1` and `dev` modes, with every optional area on, and with basic and token
auth) against its own fresh oci-ref, all at once; and, at the same time, the `dev`
run once more through the offline container path (an image built FROM scratch from
the suite binary with podman, run with host networking). One test per run: it fails
on any failed case and on any skip not on the reviewed skip list.

The binaries come from CONFORMANCE_DIR (default ../shared/conformance/ beside the
checkout). Without them these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get('CI') == 'true'
CONTAINER_RUN = 'dev'
ENGINE = 'podman'


def _load_runner() -> Any:
    spec = importlib.util.spec_from_file_location('conformance_run',
                                                  ROOT / 'conformance' / 'run.py')
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
RUNS = list(runner.DEFAULT_RUNS)


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f'{what} - under CI=true the conformance gate must run',
                    pytrace=False)
    pytest.skip(what)


class Launch:
    """conformance/run.py in the background; ``wait`` gives its results folder."""

    def __init__(self, results: Path, runs: list[str], **env: str):
        self.results = results
        self.log = results.with_suffix('.log')
        environ = {**os.environ, **env}
        with open(self.log, 'wb') as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / 'conformance' / 'run.py'), '--results',
                 str(results), '--runs', ','.join(runs)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=environ, cwd=ROOT)

    def wait(self) -> Path:
        try:
            self.process.wait(timeout=900)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.results

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope='module')
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Launch]]:
    """Both launches start at once; each test waits for the one it reads."""
    base = tmp_path_factory.mktemp('conformance')
    launches: dict[str, Launch] = {}
    if runner.binary('legacy') and runner.binary('main'):
        launches['binary'] = Launch(base / 'binary', RUNS, CONFORMANCE_ENGINE='none')
        if shutil.which(ENGINE):
            # Built afresh (no layer cache), so the build path runs every time.
            launches['container'] = Launch(base / 'container', [CONTAINER_RUN],
                                           CONFORMANCE_ENGINE=ENGINE,
                                           CONFORMANCE_IMAGE_REBUILD='1')
    yield launches
    for launch in launches.values():
        launch.stop()


def outcome_of(launch: Launch, run: str) -> dict[str, Any]:
    results = launch.wait()
    path = results / run / 'run.json'
    if not path.is_file():
        log = launch.log.read_text(errors='replace')[-3000:]
        suite_log = results / run / 'suite.log'
        tail = suite_log.read_text(errors='replace')[-3000:] if suite_log.is_file() else ''
        pytest.fail(f'{run}: no results\nrun.py:\n{log}\nsuite.log:\n{tail}',
                    pytrace=False)
    return json.loads(path.read_text())


def check(outcome: dict[str, Any], report: Any) -> None:
    line = (f"{outcome['run']}: {outcome['passed']} passed, {outcome['failures']} "
            f"failed, {outcome['errors']} errors, {outcome['skipped']} skipped of "
            f"{outcome['tests']} in {outcome['seconds']:.1f} s ({outcome['runner']})")
    report(line)
    assert outcome['tests'] > 0, line
    assert outcome['failures'] == 0 and outcome['errors'] == 0, (
        line + ''.join(f'\n  failed: {n}' for n in outcome['failed_cases'])
        + (f"\n  {outcome['note']}" if outcome['note'] else ''))
    assert not outcome['unexpected_skips'], (
        line + '; skipped, not on the skip list of conformance/README.md:'
        + ''.join(f'\n  {n}' for n in outcome['unexpected_skips']))
    assert outcome['ok'], line


@pytest.mark.parametrize('run', RUNS)
def test_upstream_suite_passes(run: str, launched: dict[str, Launch],
                               conformance_report: Any) -> None:
    """One run of the real suite against its own fresh oci-ref."""
    if 'binary' not in launched:
        _missing('conformance suite binaries not found (set CONFORMANCE_DIR; see '
                 'conformance/README.md)')
    outcome = outcome_of(launched['binary'], run)
    check(outcome, conformance_report)
    if run in ('basic', 'token'):
        # Auth on skips nothing the same configuration skips without auth.
        plain = outcome_of(launched['binary'], 'all')
        assert outcome['skipped'] <= plain['skipped'], (outcome, plain)


def test_upstream_suite_passes_in_a_container_built_offline(
        launched: dict[str, Launch], conformance_report: Any) -> None:
    """The `dev` run through podman: an image FROM scratch holding only the suite
    binary, built with --network=none, run with host networking."""
    if 'binary' not in launched:
        _missing('conformance suite binaries not found (set CONFORMANCE_DIR)')
    if 'container' not in launched:
        _missing(f'{ENGINE} not found (make clients installs it)')
    outcome = outcome_of(launched['container'], CONTAINER_RUN)
    assert outcome['runner'].startswith(f'{ENGINE} localhost/oci-ref-conformance-main:'), \
        outcome['runner']
    log = (launched['container'].results / CONTAINER_RUN / 'suite.log').read_text()
    assert f'{ENGINE} build --no-cache --pull=never --network=none' in log, log[:2000]
    assert 'FROM scratch' in log
    outcome['run'] = f"{CONTAINER_RUN} in {ENGINE}"
    check(outcome, conformance_report)
    direct = outcome_of(launched['binary'], CONTAINER_RUN)
    assert (outcome['tests'], outcome['passed']) == (direct['tests'], direct['passed'])
