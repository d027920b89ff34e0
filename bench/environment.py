"""What a run ran on: machine, filesystem, versions of both servers and their packages,
the load generators; recorded in the result's ``environment``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.plan import REPO
from bench.servers import oci_ref_path


def _out(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ''
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else ''


def environment(
    args: argparse.Namespace,
    oci_exe: str,
    dist_exe: str | None,
    loadgens: dict[str, str],
    workdir: Path,
) -> dict[str, Any]:
    cpu = ''
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    mem = ''
    with contextlib.suppress(OSError), open('/proc/meminfo') as f:
        mem = f'{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB'
    osname = ''
    with contextlib.suppress(OSError), open('/etc/os-release') as f:
        for line in f:
            if line.startswith('PRETTY_NAME='):
                osname = line.split('=', 1)[1].strip().strip('"')
    fs, best = '', ''
    with contextlib.suppress(OSError), open('/proc/mounts') as f:
        for line in f:
            dev, mnt, typ = line.split()[:3]
            inside = str(workdir) == mnt or str(workdir).startswith(mnt.rstrip('/') + '/')
            if inside and len(mnt) >= len(best):
                best, fs = mnt, f'{typ} ({dev} on {mnt})'
    versions_py = (
        'import json, sys, sqlite3, importlib.metadata as m\n'
        'v = {p: m.version(p) for p in ("uvicorn", "falcon", "uvloop", '
        '"httptools", "sqlite-utils", "jsonschema")}\n'
        'v["sqlite"] = sqlite3.sqlite_version\n'
        'v["python"] = sys.version.split()[0]\nprint(json.dumps(v))'
    )
    try:
        pkgs = json.loads(_out([args.python, '-c', versions_py]) or '{}')
    except json.JSONDecodeError:
        pkgs = {}
    if args.oci_ref_rev:
        where = str(workdir / 'oci-ref-src' / 'oci_ref')
    else:
        where = str(Path(oci_ref_path(args.python)).parent)
    rev = args.oci_ref_rev or 'HEAD'
    git = _out(['git', '-C', str(REPO), 'rev-parse', '--short', rev])
    if args.oci_ref_rev:
        git += f', a snapshot of {rev}'
    elif _out(['git', '-C', str(REPO), 'status', '--porcelain', '--', 'oci_ref']):
        git += ' + uncommitted changes in oci_ref/'
    tools = {}
    for method, tool in loadgens.items():
        if tool == 'wrk':
            tools[method] = 'wrk ' + _out(['dpkg-query', '-W', '-f', '${Version}', 'wrk'])
        elif tool == 'hey':
            tools[method] = 'hey ' + _out(['dpkg-query', '-W', '-f', '${Version}', 'hey'])
        else:
            tools[method] = 'built-in asyncio generator (bench/load.py)'
    return {
        'cpu': cpu,
        'cores': os.cpu_count(),
        'memory': mem,
        'kernel': platform.release(),
        'os': osname,
        'filesystem': fs,
        'oci_ref': _out([oci_exe, '--version']),
        'oci_ref_git': git,
        'oci_ref_imported_from': where,
        'distribution': _out([dist_exe, '--version']) if dist_exe else None,
        'python': pkgs.get('python', ''),
        'packages': pkgs,
        'bench_python': sys.version.split()[0],
        'loadgen': tools,
        'oci_ref_flags': '--no-access-log --log-level warning',
        'distribution_config': 'filesystem storage, inmemory blobdescriptor cache, log '
        'level error, access log off',
    }
