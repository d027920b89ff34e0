"""Request-rate load generators for figure 6: wrk (GET), hey (HEAD: wrk cannot, its
parser waits for the body Content-Length announces, wg/wrk#198) and a built-in asyncio
generator when neither is installed. wrk and hey are installed by the project's install
step (scripts/install-bench.sh, run by `make bench`), never from here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.plan import ACCEPT, log
from bench.stats import pct

WRK_LUA = r"""
wrk.method = "@METHOD@"
wrk.headers["Accept"] = "@ACCEPT@"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"connect\":%d," ..
    "\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d,\"p50_us\":%d," ..
    "\"p99_us\":%d,\"mean_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def choose_loadgens(choice: str) -> dict[str, str]:
    """The tool per method: GET → wrk, HEAD → hey, the built-in generator for what is
    not installed (scripts/install-bench.sh installs both)."""
    if choice == 'python':
        return {'GET': 'python', 'HEAD': 'python'}
    have = {t: shutil.which(t) is not None for t in ('wrk', 'hey')}
    get = 'wrk' if have['wrk'] and choice != 'hey' else 'hey' if have['hey'] else 'python'
    head = 'hey' if have['hey'] else 'python'
    if 'python' in (get, head):
        log(
            'wrk/hey not installed (scripts/install-bench.sh, run by `make bench`): '
            'the built-in asyncio load generator stands in'
        )
    return {'GET': get, 'HEAD': head}


def parse_wrk(stdout: str) -> dict[str, Any]:
    """The WRKJSON line WRK_LUA's done() prints, as a rate record; a run without a
    single request counts as an error."""
    m = re.search(r'^WRKJSON (.*)$', stdout, re.M)
    if m is None:
        raise ValueError('no WRKJSON line in the output of wrk')
    r = json.loads(m[1])
    errors = r['connect'] + r['read'] + r['write'] + r['status'] + r['timeout']
    if r['requests'] == 0:
        errors += 1
    return {
        'rps': r['requests'] / (r['duration_us'] / 1e6),
        'p50_ms': r['p50_us'] / 1000,
        'p99_ms': r['p99_us'] / 1000,
        'requests': r['requests'],
        'errors': errors,
    }


def run_wrk(
    workdir: Path,
    port: int,
    path: str,
    method: str,
    seconds: int,
    connections: int,
    threads: int,
) -> dict[str, Any]:
    script = workdir / f'wrk-{method}.lua'
    script.write_text(WRK_LUA.replace('@METHOD@', method).replace('@ACCEPT@', ACCEPT))
    cmd = [
        'wrk',
        f'-t{threads}',
        f'-c{connections}',
        f'-d{seconds}s',
        '--timeout',
        '10s',
        '-s',
        str(script),
        f'http://127.0.0.1:{port}{path}',
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    try:
        return parse_wrk(out.stdout)
    except ValueError:
        raise RuntimeError(f'wrk failed: {out.stdout}\n{out.stderr}') from None


def parse_hey(text: str) -> dict[str, Any]:
    """hey's text summary as a rate record: errors are non-2xx responses plus the
    requests listed under "Error distribution" (connection failures)."""
    rps = re.search(r'Requests/sec:\s+([\d.]+)', text)
    if rps is None:
        raise ValueError('no Requests/sec in the output of hey')

    def quantile(q: int) -> float:
        m = re.search(rf'^\s*{q}% in ([\d.]+) secs', text, re.M)
        return float(m[1]) * 1000 if m else math.nan

    statuses = {
        int(s): int(n) for s, n in re.findall(r'\[(\d{3})\]\s+(\d+) responses', text)
    }
    errors_section = text.split('Error distribution:', 1)
    failed = (
        sum(int(n) for n in re.findall(r'^\s*\[(\d+)\]', errors_section[1], re.M))
        if len(errors_section) > 1
        else 0
    )
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        'rps': float(rps[1]),
        'p50_ms': quantile(50),
        'p99_ms': quantile(99),
        'requests': sum(statuses.values()),
        'errors': sum(statuses.values()) - ok + failed,
    }


def run_hey(
    port: int, path: str, method: str, seconds: int, connections: int
) -> dict[str, Any]:
    cmd = [
        'hey',
        '-z',
        f'{seconds}s',
        '-c',
        str(connections),
        '-m',
        method,
        '-H',
        f'Accept: {ACCEPT}',
        '-disable-compression',
        '-disable-redirects',
        f'http://127.0.0.1:{port}{path}',
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f'hey failed: {out.stdout}\n{out.stderr}')
    try:
        return parse_hey(out.stdout)
    except ValueError:
        raise RuntimeError(f'hey failed: {out.stdout}\n{out.stderr}') from None


async def _aio_load(
    port: int, path: str, method: str, seconds: float, connections: int
) -> tuple[list[float], int, float]:
    request = (
        f'{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {ACCEPT}\r\n\r\n'
    ).encode()
    latencies: list[float] = []
    errors = [0]
    start = time.perf_counter()
    deadline = start + seconds
    length_re = re.compile(rb'(?im)^content-length:\s*(\d+)')

    async def one() -> None:
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        try:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b'\r\n\r\n')
                m = length_re.search(head)
                if method != 'HEAD' and m and int(m[1]):
                    await reader.readexactly(int(m[1]))
                latencies.append(time.perf_counter() - t)
                if not head.startswith((b'HTTP/1.1 2', b'HTTP/1.0 2')):
                    errors[0] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return latencies, errors[0], time.perf_counter() - start


def run_aio(
    port: int, path: str, method: str, seconds: float, connections: int
) -> dict[str, Any]:
    runner: Callable[..., Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    lat, errors, took = runner(_aio_load(port, path, method, seconds, connections))
    return {
        'rps': len(lat) / took,
        'p50_ms': pct(lat, 50) * 1000,
        'p99_ms': pct(lat, 99) * 1000,
        'requests': len(lat),
        'errors': errors,
    }


def measure_rate(
    tool: str,
    workdir: Path,
    port: int,
    path: str,
    method: str,
    seconds: int,
    connections: int,
    threads: int,
) -> dict[str, Any]:
    """One load run with ``tool`` (wrk, hey or python): req/s, p50, p99, requests,
    errors."""
    if tool == 'wrk':
        return run_wrk(workdir, port, path, method, seconds, connections, threads)
    if tool == 'hey':
        return run_hey(port, path, method, seconds, connections)
    return run_aio(port, path, method, seconds, connections)
