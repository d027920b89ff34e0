"""The results as markdown: the figures against distribution, against their ceilings,
the machine's limits, the harness's A/A noise and the other load seen; and
docs/benchmarks.md, generated from the newest full run. Results written by earlier
versions of the bench (without ceilings or noise) render too: what can be derived from
their samples and limits is derived."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.plan import DOC, RESULTS
from bench.stats import ceiling_rows, harness_noise, median, push_ceiling_limit


def fmt(x: float | None, unit: str = '') -> str:
    if x is None or math.isnan(x):
        return '—'
    if unit == 'req/s' or abs(x) >= 1000:
        return f'{x:,.0f}'
    if abs(x) >= 100:
        return f'{x:.0f}'
    if abs(x) >= 10:
        return f'{x:.1f}'
    if abs(x) >= 1:
        return f'{x:.2f}'
    return f'{x:.3f}'


MET = {True: 'yes', False: '**no**', None: ''}


def against_distribution(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures compared with distribution (the others name their baseline)."""
    return [f for f in result['figures'] if 'baseline' not in f]


def table(result: dict[str, Any]) -> str:
    rows = [
        '| # | figure | unit | oci-ref | distribution | oci-ref / distribution '
        '| target | met? |',
        '|---|---|---|---:|---:|---:|---|---|',
    ]
    for f in against_distribution(result):
        num = f['key'].split('_', 1)[0]
        met = MET[f['met']]
        ratio = '—' if f['ratio'] is None else f'{f["ratio"]:.2f}'
        rows.append(
            f'| {num} | {f["figure"]} | {f["unit"]} '
            f'| {fmt(f["oci_ref"], f["unit"])} '
            f'| {fmt(f["distribution"], f["unit"])} | {ratio} | {f["target"]} '
            f'| {met} |'
        )
    return '\n'.join(rows)


LIMIT_LABELS = {
    'sha256_MBps': ('sha256, one core (hashlib)', 'MB/s'),
    'disk_write_fsync_MBps': ('disk: sequential 1 MiB writes, then fsync', 'MB/s'),
    'disk_write_cpu_ms_per_MB': ('CPU of those writes (page cache, filesystem)',
                                 'ms/MB'),
    'fsync_4k_ms': ('disk: 4 KiB write + fsync + rename + directory fsync, p50', 'ms'),
    'loopback_tcp_MBps': ('loopback TCP, one connection, 1 MiB send/recv', 'MB/s'),
    'push_ceiling_MBps': ('push ceiling: the slower of sha256 and the disk', 'MB/s'),
    'cold_pull_ceiling_MBps': ('cold pull-through ceiling: the push ceiling, and the '
                               'CPU of upstream, cache and client on the cores',
                               'MB/s'),
    'falcon_bare_head_rps': ('bare Falcon app on uvicorn, 1 KiB body: HEAD', 'req/s'),
    'falcon_bare_get_rps': ('bare Falcon app on uvicorn, 1 KiB body: GET', 'req/s'),
}


def limits_table(result: dict[str, Any]) -> str:
    rows = ['| limit | value | unit |', '|---|---:|---|']
    for k, v in limits_of(result).items():
        label, unit = LIMIT_LABELS.get(k, (k, ''))
        rows.append(f'| {label} | {fmt(v["median"], unit)} | {unit} |')
    return '\n'.join(rows)


def limits_of(result: dict[str, Any]) -> dict[str, Any]:
    """The run's limits, with the push ceiling derived when the run predates it."""
    limits = dict(result.get('limits', {}))
    sha, disk = limits.get('sha256_MBps'), limits.get('disk_write_fsync_MBps')
    if 'push_ceiling_MBps' not in limits and sha and disk:
        limits['push_ceiling_MBps'] = push_ceiling_limit(sha['samples'], disk['samples'])
    return limits


def ceilings_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    if 'ceilings' in result:
        return result['ceilings']
    return ceiling_rows(result['figures'], limits_of(result))


def share(x: float | None) -> str:
    return '—' if x is None else f'{x:.0%}'


def ceilings_table(rows: list[dict[str, Any]]) -> str:
    out = [
        '| # | figure | unit | ceiling | oci-ref | share | distribution | share '
        '| target | met? |',
        '|---|---|---|---:|---:|---:|---:|---:|---|---|',
    ]
    for r in rows:
        num = r['key'].split('_', 1)[0]
        met = {True: 'yes', False: '**no**', None: ''}[r['met']]
        unit = r['unit']
        out.append(
            f'| {num} | {r["figure"]} | {unit} | {fmt(r["ceiling"], unit)} '
            f'| {fmt(r["oci_ref"], unit)} | {share(r["oci_share"])} '
            f'| {fmt(r["distribution"], unit)} | {share(r["distribution_share"])} '
            f'| {r["target"]} | {met} |'
        )
    return '\n'.join(out)


def noise_of(result: dict[str, Any]) -> dict[str, Any] | None:
    return result['noise'] if 'noise' in result else harness_noise(result['figures'])


def aa_noise(result: dict[str, Any]) -> str:
    """The harness's A/A noise, as a sentence (empty without repetitions)."""
    n = noise_of(result)
    if not n:
        return ''
    labels = {f['key']: f['figure'] for f in result['figures']}
    worst = max(n['per_figure'], key=n['per_figure'].get)
    return (
        "A/A noise of the harness (per figure, how far one server's repetitions in "
        'this run land from their median: the median of |x / median - 1|, the largest '
        'over the servers): median '
        f'{n["median"]:.1%} over {len(n["per_figure"])} figures, largest {n["max"]:.1%} '
        f'({labels.get(worst, worst)}). A difference between two runs smaller than a '
        "figure's noise is not a change."
    )


def header(result: dict[str, Any]) -> str:
    e = result['environment']
    p = result['plan']
    pk = e.get('packages', {})
    tools = e['loadgen']
    return '\n'.join(
        [
            f'- date: {result["started"]} (UTC), {result["mode"]} run, '
            f'{result["duration_s"]:.0f} s',
            f'- machine: {e["cpu"]}, {e["cores"]} cores, {e["memory"]}, kernel '
            f'{e["kernel"]}, {e["os"]}; storage on {e["filesystem"]}',
            f'- versions: {e["oci_ref"]} (git {e["oci_ref_git"]}); '
            f'{e["distribution"] or "distribution not installed"}; Python {e["python"]}, '
            f'uvicorn {pk.get("uvicorn", "?")}, falcon {pk.get("falcon", "?")}, uvloop '
            f'{pk.get("uvloop", "?")}, httptools {pk.get("httptools", "?")}, SQLite '
            f'{pk.get("sqlite", "?")}',
            f'- load generators (figure 6): GET {tools["GET"]}, HEAD {tools["HEAD"]}; '
            f'{p["connections"]} keep-alive connections, {p["rate_seconds"]} s per run',
            f'- oci-ref: `serve {e["oci_ref_flags"]}` (fsync on, the default), workers 1 '
            f'unless the row says otherwise; distribution: {e["distribution_config"]}',
            '- repetitions, A/B interleaved, medians reported: '
            f'startup {p["startup_reps"]}, transfers {p["transfer_reps"]}, small objects '
            f'{p["small_reps"]}, listings {p["list_reps"]} x {p["list_requests"]} '
            f'requests, request rates {p["rate_reps"]}, concurrent pushes '
            f'{p["concurrent_reps"]}'
            + (f', pull-through cache {p["cache_reps"]}' if 'cache_reps' in p else ''),
        ]
    )


def other_load(result: dict[str, Any]) -> str:
    """Other load on the machine during the measurements, per server."""
    per: dict[str, list[float]] = {}
    for items in result['raw'].values():
        for r in items:
            if 'other_cores' in r:
                per.setdefault(r['server'], []).append(r['other_cores'])
    if not per:
        return ''
    parts = [f'{who}: median {median(v):.2f}, max {max(v):.2f}' for who, v in per.items()]
    return (
        'Other load during the measurements (CPU cores busy outside the bench and '
        'the servers, of '
        + str(result['environment']['cores'])
        + '): '
        + '; '.join(parts)
        + '.'
    )


def signed(x: float | None, unit: str = '') -> str:
    """A difference, its sign always shown."""
    return '—' if x is None else ('+' if x >= 0 else '-') + fmt(abs(x), unit)


def ratio_text(x: float | None) -> str:
    return '—' if x is None else f'{x:.2f}'


def column_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(column label, figure, the column's summary) for every extra column."""
    return [(label, f, col) for f in result['figures']
            for label, col in f.get('columns', {}).items()]


def columns_table(result: dict[str, Any]) -> str:
    """The extra oci-ref columns (issue 14's replicas) beside the single node, with
    the figure's target applied to them."""
    rows = [
        '| # | figure | unit | column | value | oci-ref (one node) | column / one node '
        '| distribution | column / distribution | target | met? |',
        '|---|---|---|---|---:|---:|---:|---:|---:|---|---|',
    ]
    for label, f, col in column_rows(result):
        num = f['key'].split('_', 1)[0]
        u = f['unit']
        rows.append(
            f'| {num} | {f["figure"]} | {u} | {label} | {fmt(col["value"], u)} '
            f'| {fmt(f["oci_ref"], u)} | {ratio_text(col["vs_oci_ref"])} '
            f'| {fmt(f["distribution"], u)} | {ratio_text(col["ratio"])} '
            f'| {f["target"]} | {MET[col["met"]]} |'
        )
    return '\n'.join(rows)


def baseline_figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in result['figures'] if 'baseline' in f]


def baseline_table(result: dict[str, Any]) -> str:
    """Figures held against another oci-ref figure of the same run (the pull-through
    cache against its upstream pulled directly): the ratio, or for a 'difference'
    target the difference."""
    rows = [
        '| # | figure | unit | measured | value | baseline | value '
        '| ratio | difference | target | met? |',
        '|---|---|---|---|---:|---|---:|---:|---:|---|---|',
    ]
    for f in baseline_figures(result):
        num = f['key'].split('_', 1)[0]
        u = f['unit']
        diff = f.get('difference')
        rows.append(
            f'| {num} | {f["figure"]} | {u} | {f["oci_server"]} | {fmt(f["oci_ref"], u)} '
            f'| {f["baseline"]} | {fmt(f.get("baseline_value"), u)} '
            f'| {ratio_text(f["ratio"])} | {signed(diff, u)} '
            f'| {f["target"]} | {MET[f["met"]]} |'
        )
    return '\n'.join(rows)


def missed_targets(result: dict[str, Any]) -> list[str]:
    """Every target a run missed: figures, extra columns, ceilings."""
    missed = [f['figure'] for f in result['figures'] if f['met'] is False]
    missed += [f'{f["figure"]}, {label}' for label, f, col in column_rows(result)
               if col['met'] is False]
    missed += [f'{r["figure"]} ({r["target"]})' for r in ceilings_of(result)
               if r['met'] is False]
    return missed


def markdown(result: dict[str, Any]) -> str:
    ceilings = ceilings_of(result)
    missed = missed_targets(result)
    summary = (
        'Every target is met.'
        if not missed
        else 'Targets missed: ' + '; '.join(missed) + '.'
    )
    if result['mode'] == 'quick':
        summary += (
            ' (Quick run: one repetition of smaller figures, a smoke test; '
            'verdicts need a full run.)'
        )
    for extra in (aa_noise(result), other_load(result)):
        if extra:
            summary += '\n\n' + extra
    text = f'{header(result)}\n\n{table(result)}\n\n{summary}\n\n'
    if column_rows(result):
        text += (
            'Scale-out (issue 14), in the same run: 2 oci-ref replicas (one worker '
            'each), metadata in PostgreSQL, blobs in S3 (moto), behind haproxy '
            'round-robin; the target is the figure\'s (bench/README.md):'
            f'\n\n{columns_table(result)}\n\n'
        )
    if baseline_figures(result):
        text += (
            'Pull-through cache (issue 13), in the same run: oci-ref caching another '
            'oci-ref on loopback, against that upstream pulled directly '
            f'(bench/README.md):\n\n{baseline_table(result)}\n\n'
        )
    if ceilings:
        text += (
            'Against the ceilings measured in the same run (bench/README.md: the push '
            "ceiling is the slower of sha256 on one core and fsync'd writes; pull, "
            'loopback TCP; manifest requests, a bare Falcon app on the same uvicorn; '
            'a cold pull through the cache, the push ceiling and the CPU it shares '
            'with its upstream and client):'
            f'\n\n{ceilings_table(ceilings)}\n\n'
        )
    return text + f'Machine limits, measured in the same run:\n\n{limits_table(result)}\n'


DOC_INTRO = """\
# Benchmarks

oci-ref against [CNCF distribution](https://github.com/distribution/distribution)
(Debian's `docker-registry`), both measured in one run of `bench/run.py` on the same
machine, with A/B repetitions interleaved so machine noise cancels out. Ratios are
oci-ref / distribution: for throughput (MB/s, req/s) above 1 means oci-ref is faster;
for time, latency and memory below 1 does. MB/s is 10^6 bytes per second. A second
table holds figures against ceilings measured in the same run (the push ceiling,
loopback TCP, a bare Falcon app on the same uvicorn) as a share of the ceiling.
Two more hold the scale-out replicas' column (2 replicas on PostgreSQL + S3 behind
haproxy) beside the single node, and the pull-through cache against its upstream
pulled directly.

This page is generated from the newest full run in `bench/results/`; do not edit it
by hand. `make bench` runs the full benchmark, `make bench BENCH_ARGS=--quick` a short
one (smaller sizes, one repetition: it does not update this page unless there is no
full run), `python bench/run.py --render` regenerates this page. Method and caveats:
[bench/README.md](../bench/README.md).
"""


def render_doc(result: dict[str, Any], source: Path) -> str:
    return (
        f'{DOC_INTRO}\n## Latest run\n\nFrom `bench/results/{source.name}`.\n\n'
        f'{markdown(result)}'
    )


def newest_result(results: Path) -> Path | None:
    """The newest full run; without one, the newest quick run. A partial run
    (``--only``) never: it lacks figures."""
    files = [f for f in sorted(results.glob('*.json')) if not f.stem.endswith('-partial')]
    full = [f for f in files if not f.stem.endswith('-quick')]
    chosen = full or files
    return chosen[-1] if chosen else None


def write_doc(results: Path = RESULTS) -> Path | None:
    src = newest_result(results)
    if src is None:
        return None
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render_doc(json.loads(src.read_text()), src))
    return src
