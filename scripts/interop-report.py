#!/usr/bin/env python3
"""Turn the JUnit XML of `pytest tests/interop` runs into the interop table.

    scripts/interop-report.py build/interop/oci-ref.xml [build/interop/distribution.xml]
        [-o docs/interop.md]

Each XML file is one run against one registry (`--registry=oci-ref|distribution`).
The tests record, as JUnit properties, their client marker (`client`), the
registry (`registry`), the operations they cover (`operations`, the first line of
the test's docstring) and each client binary they ran with its version (`binary`).
One table row per client and set of binaries; one result column per registry; then
every failure and skip, with its reason. `make interop-report` runs this.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

CLIENT_ORDER = ['skopeo', 'podman', 'buildah', 'oras', 'crane', 'cosign', 'containerd',
                'docker', 'oras_py', 'other']
CLIENT_NAMES = {'containerd': 'containerd (ctr)', 'oras_py': 'oras-py'}
REGISTRY_NAMES = {'oci-ref': 'oci-ref', 'distribution': 'CNCF distribution (control)'}


@dataclass
class Case:
    name: str
    client: str
    registry: str
    operations: str
    binaries: tuple[str, ...]
    outcome: str  # passed | failed | skipped
    reason: str = ''
    seconds: float = 0.0


@dataclass
class Run:
    registry: str
    path: Path
    cases: list[Case] = field(default_factory=list)
    seconds: float = 0.0
    timestamp: str = ''
    hostname: str = ''


def one_line(text: str, limit: int = 220) -> str:
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + '…'


def reason_of(element: ET.Element) -> str:
    """The most telling line of a failure: the client's own error if it printed one."""
    message = element.get('message') or element.text or ''
    # pytest shortens long messages with a note about the rest; drop the note.
    message = re.sub(r'\s*\[\+\d+ more lines?; [^\]]*\]', '', message)
    lines = message.splitlines()
    for i, line in enumerate(lines):
        if line.startswith('stderr: ') and line[8:].strip():
            cmd = lines[0].split(': ', 2)[-1].split()[:3] if lines else []
            exe = Path(cmd[0]).name if cmd else ''
            tail = [line[8:], *lines[i + 1:i + 3]]
            return one_line(f'{exe} {" ".join(cmd[1:])}: ' + ' '.join(
                t for t in tail if not t.startswith('server log')))
    if element.tag == 'skipped' and message.startswith('Skipped: '):
        message = message[len('Skipped: '):]
    return one_line(lines[0] if lines else message)


def read_run(path: Path) -> Run:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == 'testsuite' else root.findall('testsuite')
    run = Run(registry=path.stem, path=path)
    for suite in suites:
        run.seconds += float(suite.get('time', 0))
        run.timestamp = run.timestamp or suite.get('timestamp', '')
        run.hostname = run.hostname or suite.get('hostname', '')
        for tc in suite.iter('testcase'):
            props: dict[str, list[str]] = defaultdict(list)
            for p in tc.iter('property'):
                props[p.get('name', '')].append(p.get('value', ''))
            if not props.get('client'):
                continue  # not an interop test
            outcome, reason = 'passed', ''
            for tag in ('failure', 'error'):
                el = tc.find(tag)
                if el is not None:
                    outcome, reason = 'failed', reason_of(el)
            el = tc.find('skipped')
            if el is not None and outcome == 'passed':
                outcome, reason = 'skipped', reason_of(el)
            registry = props['registry'][0] if props.get('registry') else path.stem
            run.registry = registry
            run.cases.append(Case(
                name=tc.get('name', ''), client=props['client'][0], registry=registry,
                operations=props['operations'][0] if props.get('operations') else '',
                binaries=tuple(sorted(set(props.get('binary', [])))),
                outcome=outcome, reason=reason, seconds=float(tc.get('time', 0))))
    return run


def cell(cases: list[Case]) -> str:
    if not cases:
        return '—'
    passed = sum(c.outcome == 'passed' for c in cases)
    failed = sum(c.outcome == 'failed' for c in cases)
    skipped = sum(c.outcome == 'skipped' for c in cases)
    if failed:
        return f'❌ {failed} of {len(cases)} failed'
    if skipped == len(cases):
        return f'⏭️ skipped ({len(cases)})'
    text = f'✅ {passed}/{len(cases)} passed'
    return text + (f', {skipped} skipped' if skipped else '')


def render(runs: list[Run]) -> str:
    registries = list(dict.fromkeys(r.registry for r in runs))
    # Rows: a client with one set of binaries (skopeo 1.9 and 1.18 are two rows).
    # Tests that never reached a binary (skipped early) join their client's row.
    rows: dict[tuple[str, tuple[str, ...]], list[Case]] = defaultdict(list)
    known: dict[tuple[str, str], tuple[str, ...]] = {}
    for run in runs:
        for c in run.cases:
            if c.binaries:
                known[(c.client, c.name)] = c.binaries
    for run in runs:
        for c in run.cases:
            rows[(c.client, c.binaries or known.get((c.client, c.name), ()))].append(c)

    def order(key: tuple[str, tuple[str, ...]]) -> tuple[int, tuple[str, ...]]:
        client = key[0]
        return (CLIENT_ORDER.index(client) if client in CLIENT_ORDER else 99, key[1])

    out = ['# Interoperability with real clients', '',
           '<!-- Generated by `make interop-report` (scripts/interop-report.py) from the '
           'JUnit XML of `pytest tests/interop`. Do not edit by hand. -->', '',
           'Every row is a real client binary driving a real registry process over '
           'loopback (tests/interop); each push is checked over HTTP (manifest served by '
           'digest with its `Content-Type` and `Docker-Content-Digest`). '
           'The control peer, CNCF distribution, runs the very same tests: where it '
           'fails, the tests exercise something it lacks (the referrers API; tag lists '
           'in lexical order, and `n` on them).',
           '']
    for run in runs:
        out.append(f'- {REGISTRY_NAMES.get(run.registry, run.registry)}: '
                   f'{len(run.cases)} tests in {run.seconds:.0f} s'
                   f' ({run.timestamp[:19].replace("T", " ")} UTC, host `{run.hostname}`)')
    out += ['', '| Client | Version | Operations covered | '
            + ' | '.join(REGISTRY_NAMES.get(r, r) for r in registries) + ' |',
            '|---|---|---|' + '---|' * len(registries)]
    for key in sorted(rows, key=order):
        cases = rows[key]
        client, binaries = key
        version = '<br>'.join(binaries) if binaries else 'not installed'
        ops = list(dict.fromkeys(c.operations for c in cases if c.operations))
        results = [cell([c for c in cases if c.registry == r]) for r in registries]
        out.append(f'| {CLIENT_NAMES.get(client, client)} | {version} | '
                   f'{"; ".join(ops).replace("|", "/")} | ' + ' | '.join(results) + ' |')

    for title, outcome in (('Failures', 'failed'), ('Skipped', 'skipped')):
        listed = [(run, c) for run in runs for c in run.cases if c.outcome == outcome]
        if not listed:
            continue
        out += ['', f'## {title}', '']
        for run, c in listed:
            reason = c.reason.replace('|', '/')
            out.append(f'- {REGISTRY_NAMES.get(run.registry, run.registry)}: '
                       f'`{c.name}` — {reason}')
    return '\n'.join(out) + '\n'


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('xml', nargs='+', type=Path, help='JUnit XML, one per registry run')
    ap.add_argument('-o', '--output', type=Path, help='markdown file (default: stdout)')
    args = ap.parse_args(argv)
    runs = [read_run(p) for p in args.xml if p.exists()]
    missing = [str(p) for p in args.xml if not p.exists()]
    if missing:
        print(f'interop-report: missing {", ".join(missing)}', file=sys.stderr)
    if not runs or not any(r.cases for r in runs):
        print('interop-report: no interop test results found', file=sys.stderr)
        return 1
    text = render(runs)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f'interop-report: wrote {args.output}')
    else:
        sys.stdout.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
