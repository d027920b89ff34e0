"""Run the upstream OCI distribution-spec conformance suites against fresh oci-ref servers.

    python conformance/run.py [--results DIR] [--runs legacy,legacy-alt,1.1,dev,all,...]
                              [--replicas N [--blobs s3|fs]]

Each run starts its own oci-ref (oci_ref.testing.OCIRegistry) on a free loopback port
with fresh storage and the settings the run needs, runs one suite against it, stops
the server and leaves JUnit, HTML, logs and run.json under DIR/<run>/ (default
conformance/results/). The runs go in parallel. With ``--replicas N`` each run gets N
replicas instead, on a fresh PostgreSQL database with blobs in a fresh S3 bucket (moto;
``--blobs fs``: a shared root), behind haproxy round-robin (tests/replicas.py starts
them; the engines come from `make engines`). See conformance/README.md for the runs,
the reviewed skip list and the runners:

- local binaries: CONFORMANCE_DIR (default ../shared/conformance/ beside the checkout,
  when present) holding `legacy-v1.1.1.test` and `conformance`; CONFORMANCE_LEGACY_BIN
  and CONFORMANCE_BIN name one binary each;
- a container engine (CONFORMANCE_ENGINE=podman or docker): an image built locally
  FROM scratch from the binary (offline), or, without a binary, the upstream images
  (CONFORMANCE_LEGACY_IMAGE, CONFORMANCE_IMAGE), run with host networking.

A run passes only when its suite exits 0, reports test cases, fails none, and skips
only cases on the skip list. Exit status: 0 when every selected run passed; 1 when
one failed or could not run; 2 when there is no runner at all.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import importlib
import json
import os
import re
import resource
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt

from oci_ref.testing import OCIRegistry

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
DEFAULT_DIR = REPO_ROOT.parent / 'shared' / 'conformance'
LEGACY_FILE = 'legacy-v1.1.1.test'
MAIN_FILE = 'conformance'
LEGACY_IMAGE = 'ghcr.io/opencontainers/distribution-spec/conformance:v1.1.1'
IMAGE = 'ghcr.io/opencontainers/distribution-spec/conformance:main'
# The legacy binary carries no commit; it is built from this release.
LEGACY_SUITE = 'distribution-spec v1.1.1 (a139cc4)'
# Namespaced repositories exercise names with slashes.
LEGACY_NAMESPACE = 'conformance/legacy/repo'
LEGACY_CROSSMOUNT = 'conformance/legacy/other'
REPO1 = 'conformance/org/repo1'
REPO2 = 'conformance/org/repo2'
USER = 'conformance'
# Every optional area of the redesigned suite (its config.go): APIs and data kinds.
EVERY_AREA = {f'OCI_API_{k}': 'true' for k in (
    'PING', 'PULL', 'PUSH', 'BLOBS_ATOMIC', 'BLOBS_DELETE', 'BLOBS_DIGEST_HEADER',
    'BLOBS_MOUNT_ANONYMOUS', 'BLOBS_UPLOAD_CANCEL', 'MANIFESTS_ATOMIC', 'MANIFESTS_DELETE',
    'MANIFESTS_DIGEST_HEADER', 'MANIFESTS_TAG_PARAM', 'TAGS_ATOMIC', 'TAGS_DELETE',
    'TAGS_LIST', 'REFERRER')} | {f'OCI_DATA_{k}': 'true' for k in (
    'IMAGE', 'INDEX', 'INDEX_LIST', 'SPARSE', 'ARTIFACT', 'SUBJECT', 'SUBJECT_MISSING',
    'ARTIFACT_LIST', 'SUBJECT_LIST', 'DATA_FIELD', 'NONDISTRIBUTABLE', 'CUSTOM_FIELDS',
    'NO_LAYERS', 'EMPTY_BLOB', 'SHA512')}


@dataclass(frozen=True)
class RunSpec:
    """One suite run: which suite, how it is configured, how oci-ref is set up."""

    name: str
    suite: str  # 'legacy' or 'main'
    what: str
    env: dict[str, str] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return ('v1.1.1' if self.suite == 'legacy'
                else self.env.get('OCI_VERSION', '1.1'))


RUNS = {r.name: r for r in (
    RunSpec('legacy', 'legacy', 'manifests deleted before blobs; automatic mount on',
            {'OCI_DELETE_MANIFEST_BEFORE_BLOBS': '1', 'OCI_AUTOMATIC_CROSSMOUNT': '1'}),
    RunSpec('legacy-alt', 'legacy', 'blobs deleted before manifests; automatic mount off',
            {'OCI_DELETE_MANIFEST_BEFORE_BLOBS': '0', 'OCI_AUTOMATIC_CROSSMOUNT': '0'},
            {'automatic_mount': False}),
    RunSpec('1.1', 'main', 'defaults of OCI_VERSION=1.1', {'OCI_VERSION': '1.1'}),
    RunSpec('dev', 'main', 'defaults of OCI_VERSION=dev', {'OCI_VERSION': 'dev'}),
    RunSpec('all', 'main', 'OCI_VERSION=1.1, every OCI_API_*/OCI_DATA_* area on; '
            'oci-ref --sparse-manifests', {'OCI_VERSION': '1.1', **EVERY_AREA},
            {'sparse_manifests': True}),
    RunSpec('basic', 'main', 'as `all`, with auth=basic (OCI_USERNAME/OCI_PASSWORD)',
            {'OCI_VERSION': '1.1', **EVERY_AREA},
            {'sparse_manifests': True, 'auth': 'basic'}),
    RunSpec('token', 'main', 'as `all`, with auth=token (OCI_USERNAME/OCI_PASSWORD)',
            {'OCI_VERSION': '1.1', **EVERY_AREA},
            {'sparse_manifests': True, 'auth': 'token'}),
)}
DEFAULT_RUNS = tuple(RUNS)
# What a run goes to, without --replicas (run.json's target).
ONE_TARGET = 'one oci-ref on SQLite + filesystem'
# The oci-conformance entry (distribution-spec/v1.1/<implementation>) comes from this run.
SUBMISSION_RUN = 'all'
HOW_TO_GET = """\
No conformance runner found. Give one of:
  CONFORMANCE_DIR=/dir   holding legacy-v1.1.1.test (`go test -c` in conformance/ of
      distribution-spec v1.1.1) and conformance (`go build` in conformance/ of main);
      default ../shared/conformance/ beside this checkout
  CONFORMANCE_LEGACY_BIN=/path, CONFORMANCE_BIN=/path   one binary each
or CONFORMANCE_ENGINE=docker|podman with network access to the upstream images
(CONFORMANCE_LEGACY_IMAGE / CONFORMANCE_IMAGE). See conformance/README.md."""


# -- the reviewed skip list -------------------------------------------------------------

SKIP_BEGIN, SKIP_END = '<!-- skip-list -->', '<!-- /skip-list -->'


def skip_list(readme: Path = HERE / 'README.md') -> dict[str, set[str]]:
    """{run: test case names} from the table between the skip-list markers of
    conformance/README.md (columns: runs, test case, the spec's reason)."""
    text = readme.read_text()
    body = text[text.index(SKIP_BEGIN) + len(SKIP_BEGIN):text.index(SKIP_END)]
    allowed: dict[str, set[str]] = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) < 3 or not cells[1].startswith('`'):
            continue  # header, separator, prose
        case = cells[1].strip('`')
        for run in re.findall(r'`([^`]+)`', cells[0]):
            allowed.setdefault(run, set()).add(case)
    return allowed


# -- results ---------------------------------------------------------------------------


@dataclass
class Outcome:
    run: str
    ran: bool
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    unexpected_skips: list[str] = field(default_factory=list)
    failed_cases: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ''

    @property
    def passed(self) -> int:
        return max(0, self.tests - self.failures - self.errors - self.skipped)

    @property
    def ok(self) -> bool:
        return (self.ran and self.tests > 0 and self.failures == 0 and self.errors == 0
                and not self.unexpected_skips)

    def line(self) -> str:
        if not self.ran:
            return f'{self.run}: not run ({self.note})'
        verdict = 'PASS' if self.ok else 'FAIL'
        text = (f'{self.run}: {verdict} {self.passed} passed, {self.failures} failed, '
                f'{self.errors} errors, {self.skipped} skipped of {self.tests}')
        if self.unexpected_skips:
            text += f'; {len(self.unexpected_skips)} skips not on the skip list'
        return text + (f' ({self.note})' if self.note else '')


# Ginkgo lists its ReportAfterSuite nodes as test cases; they are not specs.
REPORT_NODES = ('html custom reporter',)


def case_outcome(case: ET.Element) -> str:
    """passed, failed, error or skipped. The legacy suite marks a case with a child
    element, the redesigned one with its ``status`` attribute only; an unknown
    status counts as an error (fail closed)."""
    status = (case.get('status') or '').lower()
    if case.find('failure') is not None or status in ('failure', 'failed'):
        return 'failed'
    if case.find('error') is not None or status == 'error':
        return 'error'
    if case.find('skipped') is not None or status in ('skipped', 'skip', 'disabled'):
        return 'skipped'
    return 'passed' if status in ('', 'passed', 'pass', 'success') else 'error'


def junit_cases(path: Path) -> list[tuple[str, str]]:
    """(name, outcome) per test case: passed, failed, error or skipped."""
    cases = []
    for case in ET.parse(path).getroot().iter('testcase'):
        name = case.get('name', '')
        if name in REPORT_NODES or name.startswith('[Report'):
            continue
        outcome = case_outcome(case)
        cases.append((name, outcome))
    return cases


def suite_commit(junit: Path) -> str:
    """The suite's commit as the redesigned suite reports it (its Config property)."""
    for prop in ET.parse(junit).getroot().iter('property'):
        if prop.get('name') == 'Config':
            found = re.search(r'^commit: (\S+)', prop.get('value', ''), re.M)
            if found:
                return found.group(1)
    return 'unknown'


def oci_ref_commit() -> str:
    done = subprocess.run(['git', '-C', str(REPO_ROOT), 'rev-parse', 'HEAD'],
                          capture_output=True, text=True, check=False)
    commit = done.stdout.strip() or 'unknown'
    dirty = subprocess.run(['git', '-C', str(REPO_ROOT), 'status', '--porcelain',
                            '--untracked-files=no'], capture_output=True, text=True,
                           check=False).stdout.strip()
    return commit + ('-dirty' if dirty else '')


# -- runners ---------------------------------------------------------------------------


def binary(suite: str) -> Path | None:
    """The suite binary: CONFORMANCE_(LEGACY_)BIN, else in CONFORMANCE_DIR."""
    named = os.environ.get('CONFORMANCE_LEGACY_BIN' if suite == 'legacy'
                           else 'CONFORMANCE_BIN')
    if named:
        return Path(named)
    folder = Path(os.environ.get('CONFORMANCE_DIR') or DEFAULT_DIR)
    path = folder / (LEGACY_FILE if suite == 'legacy' else MAIN_FILE)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def container_engine() -> str | None:
    """CONFORMANCE_ENGINE names docker or podman ('none' or unset: binaries first)."""
    chosen = os.environ.get('CONFORMANCE_ENGINE', '')
    if chosen in ('', 'none'):
        return None
    return shutil.which(chosen)


def fallback_engine() -> str | None:
    """Without binaries and without CONFORMANCE_ENGINE: an engine found on PATH."""
    if os.environ.get('CONFORMANCE_ENGINE') == 'none':
        return None
    return shutil.which('docker') or shutil.which('podman')


def local_image(engine: str, suite: str, path: Path, log: Any) -> str:
    """An image FROM scratch holding only the (static) suite binary, built offline;
    tagged by the binary's digest, so it is built once per binary."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    image = f'localhost/oci-ref-conformance-{suite}:{digest}'
    with _BUILDING:  # parallel runs of one suite build its image once
        return _build(engine, image, path, log)


_BUILDING = threading.Lock()


def _build(engine: str, image: str, path: Path, log: Any) -> str:
    rebuild = os.environ.get('CONFORMANCE_IMAGE_REBUILD') == '1'
    if subprocess.run([engine, 'image', 'inspect', image], capture_output=True,
                      check=False).returncode == 0:
        if not rebuild:
            return image
        # Our own tag only; a container still using it keeps it (then it dangles).
        subprocess.run([engine, 'rmi', image], capture_output=True, check=False)
    with tempfile.TemporaryDirectory(prefix='oci-ref-conformance-image-') as tmp:
        context = Path(tmp)
        shutil.copy(path, context / 'suite')
        (context / 'Containerfile').write_text(
            'FROM scratch\nCOPY suite /suite\nWORKDIR /results\nENTRYPOINT ["/suite"]\n')
        cmd = [engine, 'build', '--network=none', '-t', image, '-f',
               str(context / 'Containerfile'), str(context)]
        if Path(engine).name == 'podman':
            cmd.insert(2, '--pull=never')
        if rebuild:
            cmd.insert(2, '--no-cache')
        log.write(f'$ {shlex.join(cmd)}\n'.encode())
        log.flush()
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f'{Path(engine).name} build failed (exit {done.returncode})')
    return image


def container_command(engine: str, image: str, env: dict[str, str], out: Path
                      ) -> list[str]:
    inner = {**env, 'OCI_REPORT_DIR': '/results', 'OCI_RESULTS_DIR': '/results'}
    # Host networking: the suite reaches oci-ref on 127.0.0.1; results land in `out`.
    # Limits no higher than ours: the engine's defaults may exceed what this host
    # lets us set (no CAP_SYS_RESOURCE in a container host), and the suite needs few.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    args = [engine, 'run', '--rm', '--network', 'host', '-v', f'{out}:/results',
            '-w', '/results', '--ulimit', f'nofile={nofile[0]}:{nofile[1]}',
            '--ulimit', 'nproc=1024:1024']
    args += shlex.split(os.environ.get('CONFORMANCE_ENGINE_ARGS', ''))
    for key, value in inner.items():
        args += ['-e', f'{key}={value}']
    return [*args, image]


def run_env(spec: RunSpec, registry: OCIRegistry, out: Path, password: str | None
            ) -> dict[str, str]:
    if spec.suite == 'legacy':
        env = {
            'OCI_ROOT_URL': registry.url,
            'OCI_NAMESPACE': LEGACY_NAMESPACE,
            'OCI_CROSSMOUNT_NAMESPACE': LEGACY_CROSSMOUNT,
            'OCI_TEST_PULL': '1',
            'OCI_TEST_PUSH': '1',
            'OCI_TEST_CONTENT_DISCOVERY': '1',
            'OCI_TEST_CONTENT_MANAGEMENT': '1',
            'OCI_HIDE_SKIPPED_WORKFLOWS': '0',
            'OCI_REPORT_DIR': str(out),
        }
    else:
        env = {
            'OCI_REGISTRY': registry.host,
            'OCI_TLS': 'disabled',
            'OCI_REPO1': REPO1,
            'OCI_REPO2': REPO2,
            'OCI_RESULTS_DIR': str(out),
            # No yaml file of the user's may leak in.
            'OCI_CONFIGURATION': '/dev/null',
        }
    if password is not None:
        env |= {'OCI_USERNAME': USER, 'OCI_PASSWORD': password}
    return env | spec.env


def serve_one(data: Path, **settings: Any) -> Any:
    """The default target of a run: one fresh oci-ref (a context manager yielding
    what run_one reads: ``url``, ``host`` and ``log``)."""
    return OCIRegistry(data, **settings)


def run_one(spec: RunSpec, results: Path, skips: dict[str, set[str]],
            serve: Any = serve_one, target: str = '') -> Outcome:
    """One run against ``serve(data_dir, **settings)`` (``ReplicaSets.serve`` of
    tests/replicas.py gives replicas behind a load balancer, ``target`` says so)."""
    out = results / spec.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    engine = container_engine()
    path = binary(spec.suite)
    if engine is None and path is None:
        engine = fallback_engine()
        if engine is None:
            return Outcome(spec.name, False, note='no suite binary and no container engine')
    settings = dict(spec.server)
    password = None
    if settings.get('auth') in ('basic', 'token'):
        password = secrets.token_urlsafe(12)
        htpasswd = out / 'server' / 'htpasswd'
        htpasswd.parent.mkdir(parents=True)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f'{USER}:{hashed}\n')
        settings['htpasswd'] = str(htpasswd)
    started = time.monotonic()
    with open(out / 'suite.log', 'wb') as log, contextlib.ExitStack() as stack:
        try:
            registry = stack.enter_context(serve(out / 'server' / 'data', **settings))
        except RuntimeError as ex:  # NotReady, or an engine of the replicas failed
            log.write(f'the registry did not start: {ex}\n'.encode())
            return Outcome(spec.name, True, errors=1, seconds=time.monotonic() - started,
                           note=f'the registry did not start ({str(ex).splitlines()[0]}); '
                                f'see {out / "suite.log"}')
        env = run_env(spec, registry, out, password)
        runner = 'binary'
        try:
            if engine is None:
                assert path is not None
                cmd = [str(path)]
            else:
                image = (local_image(engine, spec.suite, path, log) if path is not None
                         else os.environ.get('CONFORMANCE_LEGACY_IMAGE') or LEGACY_IMAGE
                         if spec.suite == 'legacy'
                         else os.environ.get('CONFORMANCE_IMAGE') or IMAGE)
                runner = f'{Path(engine).name} {image}'
                cmd = container_command(engine, image, env, out)
        except RuntimeError as ex:
            return Outcome(spec.name, True, errors=1, note=str(ex))
        done = _execute(cmd, out, env, log)
        if (done.returncode in (125, 126, 127) and engine and '--runtime' not in cmd
                and not list(out.glob('junit*.xml')) and shutil.which('runc')):
            # The engine's default runtime could not start the container (crun on a
            # hybrid cgroup host, say): once more with runc.
            done = _execute([*cmd[:2], '--runtime', 'runc', *cmd[2:]], out, env, log)
    seconds = time.monotonic() - started
    shutil.copy(registry.log, out / 'server.log')
    for i, log in enumerate(getattr(registry, 'logs', [])):  # replicas: each one's
        shutil.copy(log, out / f'server-{i}.log')
    junits = sorted(out.glob('junit*.xml'))
    if not junits:
        return Outcome(spec.name, True, errors=1, seconds=seconds,
                       note=f'no JUnit report; exit {done.returncode}, see '
                            f'{out / "suite.log"}')
    cases = [c for j in junits for c in junit_cases(j)]
    outcome = Outcome(spec.name, True, len(cases),
                      failures=sum(o == 'failed' for _, o in cases),
                      errors=sum(o == 'error' for _, o in cases),
                      skipped=sum(o == 'skipped' for _, o in cases), seconds=seconds)
    allowed = skips.get(spec.name, set())
    outcome.unexpected_skips = sorted({n for n, o in cases
                                       if o == 'skipped' and n not in allowed})
    outcome.failed_cases = sorted({n for n, o in cases if o in ('failed', 'error')})
    if done.returncode != 0 and outcome.failures == outcome.errors == 0:
        outcome.errors += 1
        outcome.note = f'suite exited {done.returncode}'
    (out / 'run.json').write_text(json.dumps({
        'run': spec.name, 'suite': spec.suite, 'mode': spec.mode,
        'what': spec.what, 'target': target or ONE_TARGET,
        'suite_commit': (LEGACY_SUITE if spec.suite == 'legacy'
                         else f'distribution-spec {suite_commit(junits[0])}'),
        'runner': runner, 'server_settings': spec.server,
        'env': {k: v for k, v in env.items() if 'PASSWORD' not in k},
        'oci_ref_commit': oci_ref_commit(),
        'date': datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S UTC'),
        **asdict(outcome), 'passed': outcome.passed, 'ok': outcome.ok,
    }, indent=2) + '\n')
    return outcome


def _replica_sets(count: int, blobs: str) -> Any:
    """tests/replicas.py's engines, started here (the checkout's tests package)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    # By name: the tests package is not part of what mypy checks (pyproject).
    return importlib.import_module('tests.replicas').standalone(count, blobs)


def _execute(cmd: list[str], out: Path, env: dict[str, str], log: Any
             ) -> subprocess.CompletedProcess[bytes]:
    shown = [re.sub(r'(PASSWORD=).*', r'\1…', c) for c in cmd]
    log.write(f'$ {shlex.join(shown)}\n'.encode())
    log.flush()
    return subprocess.run(cmd, cwd=out, env={**os.environ, **env}, stdout=log,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)


# -- the oci-conformance entry ---------------------------------------------------------

def product_yaml(version: str) -> str:
    """PRODUCT.yaml; the URLs come from OCI_REF_PROJECT_URL (left out without it)."""
    url = os.environ.get('OCI_REF_PROJECT_URL', '')
    lines = ['vendor: oci-ref project', 'name: oci-ref', f'version: {version}']
    if url:
        lines += [f'website_url: {url}', f'repo_url: {url}', f'documentation_url: {url}']
    lines += ['type: distribution',
              "description: 'A conformance-focused reference implementation of the OCI "
              "Distribution Spec, in Python.'"]
    return '\n'.join(lines) + '\n'


def submission(results: Path, target: Path) -> Path:
    """distribution-spec/v1.1/oci-ref/ as opencontainers/oci-conformance expects it
    (instructions.md: README.md, PRODUCT.yaml, results.yaml, report.html, junit.xml)."""
    from oci_ref import __version__

    run = results / SUBMISSION_RUN
    meta = json.loads((run / 'run.json').read_text())
    entry = target / 'distribution-spec' / 'v1.1' / 'oci-ref'
    if entry.exists():
        shutil.rmtree(entry)
    entry.mkdir(parents=True)
    for name in ('junit.xml', 'report.html', 'results.yaml'):
        shutil.copy(run / name, entry / name)
    (entry / 'PRODUCT.yaml').write_text(product_yaml(__version__))
    exports = '\n'.join(
        f'  export {k}="{v}"' for k, v in meta['env'].items()
        if k.startswith(('OCI_VERSION', 'OCI_API_', 'OCI_DATA_')))
    summary = [line for line in (run / 'suite.log').read_text(errors='replace')
               .splitlines() if re.match(r'\s*(OCI Conformance Result|Disabled|Skip|Pass|'
                                         r'FAIL|Error|Total)\b', line)]
    (entry / 'README.md').write_text(f"""# oci-ref

oci-ref {__version__} (commit {meta['oci_ref_commit']}), run on {meta['date']}.

## Running oci-ref

```shell
pip install oci-ref   # or, in a checkout: make setup
oci-ref serve --listen 127.0.0.1:5000 --root /tmp/oci-ref --sparse-manifests
```

`--sparse-manifests` accepts manifests whose referenced content has not been pushed (the
suite's `OCI_DATA_SPARSE`); everything else is the default configuration.

## Run the Conformance Tests

```shell
cd distribution-spec/conformance
(
  export OCI_REGISTRY="127.0.0.1:5000"
  export OCI_TLS="disabled"
  export OCI_REPO1="{REPO1}"
  export OCI_REPO2="{REPO2}"
{exports}
  go run -buildvcs=true .
)
```

or, in a checkout of oci-ref, `make conformance` (which also runs the legacy suite and
the redesigned suite with auth on; see conformance/README.md there).

This produced ({meta['suite_commit']}):

```text
{chr(10).join(summary)}
```

More details can be found in the resulting `report.html`.
""")
    return entry


# -- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', type=Path, default=HERE / 'results')
    parser.add_argument('--runs', '--suites', dest='runs', default=','.join(DEFAULT_RUNS),
                        help=f'comma-separated, of: {", ".join(RUNS)}')
    parser.add_argument('--jobs', type=int, default=0,
                        help='runs at a time (default: all at once)')
    parser.add_argument('--replicas', type=int, default=0, metavar='N',
                        help='run each suite through N replicas on PostgreSQL behind '
                             'haproxy (0: one oci-ref on SQLite + filesystem)')
    parser.add_argument('--blobs', choices=('s3', 'fs'), default='s3',
                        help='with --replicas: blobs in S3 (moto) or on a shared root')
    parser.add_argument('--submission', type=Path,
                        help='write the oci-conformance entry under this folder '
                             f'(needs the `{SUBMISSION_RUN}` run)')
    args = parser.parse_args(argv)
    # Absolute: each suite runs in its own folder and writes where it is told.
    args.results = args.results.resolve()
    names = [s for s in args.runs.split(',') if s]
    unknown = set(names) - set(RUNS)
    if unknown:
        parser.error(f'unknown runs: {", ".join(sorted(unknown))}')
    if not any(binary(RUNS[n].suite) for n in names) and not (
            container_engine() or fallback_engine()):
        print(HOW_TO_GET, file=sys.stderr)
        return 2
    if args.replicas < 0:
        parser.error('--replicas: 0 or more')
    args.results.mkdir(parents=True, exist_ok=True)
    skips = skip_list()
    jobs = args.jobs or len(names)
    with contextlib.ExitStack() as stack:
        serve, target = serve_one, ''
        if args.replicas:
            try:
                sets = stack.enter_context(_replica_sets(args.replicas, args.blobs))
            except RuntimeError as ex:  # an engine missing or failing to start
                print(f'--replicas {args.replicas}: {ex}', file=sys.stderr)
                return 2
            serve, target = sets.serve, sets.describe()
            print(f'each run through {target}', flush=True)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            outcomes = list(pool.map(
                lambda n: run_one(RUNS[n], args.results, skips, serve, target), names))
    for outcome in outcomes:
        (args.results / f'{outcome.run}.summary').write_text(outcome.line() + '\n')
        print(f'{outcome.line()} in {outcome.seconds:.1f} s', flush=True)
        for name in outcome.failed_cases[:20]:
            print(f'  failed: {name}')
        for name in outcome.unexpected_skips[:20]:
            print(f'  skipped, not on the skip list: {name}')
    (args.results / 'summary.txt').write_text(''.join(o.line() + '\n' for o in outcomes))
    ok = all(o.ok for o in outcomes)
    if args.submission:
        if args.replicas:
            # The entry shows how to run one oci-ref, as the listing asks.
            print('no oci-conformance entry from a run through replicas')
        elif SUBMISSION_RUN not in names:
            print(f'no oci-conformance entry: it comes from the `{SUBMISSION_RUN}` run')
        elif ok:
            print(f'oci-conformance entry: {submission(args.results, args.submission)}')
        else:
            print('no oci-conformance entry: a run failed', file=sys.stderr)
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
