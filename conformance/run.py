"""Run the upstream OCI distribution-spec conformance suites against a fresh oci-ref.

    python conformance/run.py [--results DIR] [--suites legacy,1.1,dev]

For each suite and mode: start oci-ref (oci_ref.testing.OCIRegistry) on a free
loopback port with a fresh root, run the suite, stop the server, and leave JUnit,
HTML and a one-line summary under DIR/<suite>/ (default conformance/results/).

Runners, in order of preference:
- local binaries: CONFORMANCE_LEGACY_BIN (a `go test -c` binary of the v1.1.1 suite)
  and CONFORMANCE_BIN (the redesigned suite's program, from the spec's main branch);
- a container engine (docker or podman) with the upstream images, overridable with
  CONFORMANCE_LEGACY_IMAGE and CONFORMANCE_IMAGE.
Exit status: 0 only when every selected suite ran and passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from oci_ref.testing import OCIRegistry

HERE = Path(__file__).resolve().parent
LEGACY_IMAGE = 'ghcr.io/opencontainers/distribution-spec/conformance:v1.1.1'
IMAGE = 'ghcr.io/opencontainers/distribution-spec/conformance:main'
# Namespaced repositories exercise names with slashes.
LEGACY_NAMESPACE = 'conformance/legacy/repo'
LEGACY_CROSSMOUNT = 'conformance/legacy/other'
REPO1 = 'conformance/org/repo1'
REPO2 = 'conformance/org/repo2'
SUITES = ('legacy', '1.1', 'dev')
HOW_TO_GET = """\
No conformance runner found. Give one of:
  CONFORMANCE_LEGACY_BIN=/path/conformance.test   the v1.1.1 suite, built with
      `go test -c` in the conformance/ directory of distribution-spec v1.1.1
  CONFORMANCE_BIN=/path/conformance               the redesigned suite, built with
      `go build` in the conformance/ directory of distribution-spec main
or install docker or podman (and network access to the images, overridable with
CONFORMANCE_LEGACY_IMAGE / CONFORMANCE_IMAGE; CONFORMANCE_ENGINE picks one).
See conformance/README.md."""


@dataclass
class Outcome:
    suite: str
    ran: bool
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    note: str = ''

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    @property
    def ok(self) -> bool:
        return self.ran and self.tests > 0 and self.failures == 0 and self.errors == 0

    def line(self) -> str:
        if not self.ran:
            return f'{self.suite}: not run ({self.note})'
        verdict = 'PASS' if self.ok else 'FAIL'
        return (f'{self.suite}: {verdict} {self.passed} passed, {self.failures} failed, '
                f'{self.errors} errors, {self.skipped} skipped of {self.tests}'
                + (f' ({self.note})' if self.note else ''))


def suite_env(suite: str, registry: OCIRegistry, out: Path) -> dict[str, str]:
    if suite == 'legacy':
        return {
            'OCI_ROOT_URL': registry.url,
            'OCI_NAMESPACE': LEGACY_NAMESPACE,
            'OCI_CROSSMOUNT_NAMESPACE': LEGACY_CROSSMOUNT,
            'OCI_TEST_PULL': '1',
            'OCI_TEST_PUSH': '1',
            'OCI_TEST_CONTENT_DISCOVERY': '1',
            'OCI_TEST_CONTENT_MANAGEMENT': '1',
            # oci-ref mounts without `from` from any repository holding the blob.
            'OCI_AUTOMATIC_CROSSMOUNT': 'true',
            'OCI_HIDE_SKIPPED_WORKFLOWS': '0',
            'OCI_REPORT_DIR': str(out),
        }
    return {
        'OCI_REGISTRY': registry.host,
        'OCI_TLS': 'disabled',
        'OCI_REPO1': REPO1,
        'OCI_REPO2': REPO2,
        'OCI_VERSION': suite,
        'OCI_RESULTS_DIR': str(out),
    }


def command(suite: str, env: dict[str, str], out: Path) -> list[str] | None:
    binary = os.environ.get('CONFORMANCE_LEGACY_BIN' if suite == 'legacy'
                            else 'CONFORMANCE_BIN')
    if binary:
        return [binary]
    engine = container_engine()
    if engine is None:
        return None
    image = (os.environ.get('CONFORMANCE_LEGACY_IMAGE', LEGACY_IMAGE) if suite == 'legacy'
             else os.environ.get('CONFORMANCE_IMAGE', IMAGE))
    # Host networking: the suite reaches oci-ref on 127.0.0.1; results land in `out`.
    inner = {**env, 'OCI_REPORT_DIR': '/results', 'OCI_RESULTS_DIR': '/results'}
    args = [engine, 'run', '--rm', '--network', 'host', '-v', f'{out}:/results',
            '-w', '/results']
    for key, value in inner.items():
        if key in env:
            args += ['-e', f'{key}={value}']
    return [*args, image]


def container_engine() -> str | None:
    """CONFORMANCE_ENGINE names one (docker, podman) or 'none'; else the first found."""
    chosen = os.environ.get('CONFORMANCE_ENGINE')
    if chosen == 'none':
        return None
    if chosen:
        return shutil.which(chosen)
    return shutil.which('docker') or shutil.which('podman')


# Ginkgo lists its ReportAfterSuite nodes as test cases; they are not specs.
REPORT_NODES = ('html custom reporter',)


def junit_counts(out: Path) -> tuple[int, int, int, int] | None:
    """(tests, failures, errors, skipped) over every JUnit file, case by case."""
    files = sorted(out.rglob('junit*.xml'))
    if not files:
        return None
    tests = failures = errors = skipped = 0
    for path in files:
        for case in ET.parse(path).getroot().iter('testcase'):
            name = case.get('name', '')
            if name in REPORT_NODES or name.startswith('[Report'):
                continue
            tests += 1
            if case.find('failure') is not None:
                failures += 1
            elif case.find('error') is not None:
                errors += 1
            elif case.find('skipped') is not None or case.get('status') in (
                    'skipped', 'disabled'):
                skipped += 1
    return tests, failures, errors, skipped


def run_suite(suite: str, results: Path) -> Outcome:
    out = results / suite
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with OCIRegistry(out / 'server' / 'data') as registry:
        env = suite_env(suite, registry, out)
        cmd = command(suite, env, out)
        if cmd is None:
            return Outcome(suite, False, note='no binary and no container engine')
        with open(out / 'suite.log', 'wb') as log:
            done = subprocess.run(cmd, cwd=out, env={**os.environ, **env}, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        shutil.copy(registry.log, out / 'server.log')
    counts = junit_counts(out)
    if counts is None:
        return Outcome(suite, True, note=f'no JUnit report; exit {done.returncode}, '
                                         f'see {out / "suite.log"}')
    outcome = Outcome(suite, True, *counts)
    if done.returncode != 0 and outcome.ok:
        outcome.errors += 1
        outcome.note = f'suite exited {done.returncode}'
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', type=Path, default=HERE / 'results')
    parser.add_argument('--suites', default=','.join(SUITES),
                        help='comma-separated: legacy, 1.1, dev')
    args = parser.parse_args(argv)
    suites = [s for s in args.suites.split(',') if s]
    unknown = set(suites) - set(SUITES)
    if unknown:
        parser.error(f'unknown suites: {", ".join(sorted(unknown))}')
    has_engine = container_engine() is not None
    runnable = [s for s in suites
                if has_engine or os.environ.get('CONFORMANCE_LEGACY_BIN' if s == 'legacy'
                                                else 'CONFORMANCE_BIN')]
    if not runnable:
        print(HOW_TO_GET, file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for suite in suites:
        outcome = (run_suite(suite, args.results) if suite in runnable
                   else Outcome(suite, False, note='no runner for this suite'))
        (args.results / f'{suite}.summary').write_text(outcome.line() + '\n')
        print(outcome.line(), flush=True)
        outcomes.append(outcome)
    (args.results / 'summary.txt').write_text(''.join(o.line() + '\n' for o in outcomes))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == '__main__':
    sys.exit(main())
