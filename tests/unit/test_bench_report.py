"""bench/report.py: the markdown of a run, and that every stored result (written by
earlier versions of the bench, without ceilings or noise) still renders, with what can
be derived from its samples and limits derived."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.plan import CACHE, DIST, OCI, RESULTS, SCALE, UPSTREAM
from bench.report import (
    ceilings_of,
    fmt,
    limits_of,
    markdown,
    newest_result,
    noise_of,
    render_doc,
    signed,
)
from bench.stats import Figure, ceiling_rows, harness_noise, median

STORED = sorted(RESULTS.glob('*.json'))


@pytest.mark.parametrize(
    ('x', 'unit', 'want'),
    [
        (None, '', '—'),
        (math.nan, '', '—'),
        (12804.92, 'req/s', '12,805'),
        (950.4, 'req/s', '950'),
        (2029.387, 'MB/s', '2,029'),
        (209.17, 'MB/s', '209'),
        (50.949, 'MiB', '50.9'),
        (2.5765, 'ms', '2.58'),
        (0.35332, 's', '0.353'),
    ],
)
def test_fmt(x: float | None, unit: str, want: str) -> None:
    assert fmt(x, unit) == want


@pytest.mark.parametrize(
    ('x', 'unit', 'want'),
    [(2.25, 'ms', '+2.25'), (-1874.2, 'MB/s', '-1,874'), (0.0, 'ms', '+0.000'),
     (None, 'ms', '—')],
)
def test_signed_shows_the_sign_of_a_difference(x: float | None, unit: str,
                                               want: str) -> None:
    assert signed(x, unit) == want


def test_there_are_stored_results_to_render() -> None:
    assert STORED, 'bench/results/ holds earlier runs'


@pytest.mark.parametrize('path', STORED, ids=[p.name for p in STORED])
def test_stored_results_render(path: Path) -> None:
    result = json.loads(path.read_text())
    md = markdown(result)
    for f in result['figures']:
        assert f['figure'] in md
    assert '| limit | value | unit |' in md
    doc = render_doc(result, path)
    assert doc.startswith('# Benchmarks\n')
    assert f'From `bench/results/{path.name}`.' in doc


@pytest.mark.parametrize('path', STORED, ids=[p.name for p in STORED])
def test_push_ceiling_is_derived_for_earlier_runs(path: Path) -> None:
    result = json.loads(path.read_text())
    limits = limits_of(result)
    sha = limits['sha256_MBps']['median']
    disk = limits['disk_write_fsync_MBps']['median']
    assert limits['push_ceiling_MBps']['median'] == min(sha, disk)
    rows = {r['key']: r for r in ceilings_of(result)}
    mono = next(f for f in result['figures'] if f['key'] == '2a_push_mono')
    assert rows['2a_push_mono']['oci_share'] == pytest.approx(
        mono['oci_ref'] / min(sha, disk)
    )
    assert 'push ceiling: the slower of sha256 and the disk' in markdown(result)


def test_noise_of_a_full_run_is_stated() -> None:
    full = [p for p in STORED if not p.stem.endswith('-quick')]
    result = json.loads(full[-1].read_text())
    n = noise_of(result)
    assert n is not None and 0 < n['median'] < n['max']
    assert f'median {n["median"]:.1%} over {len(n["per_figure"])} figures' in markdown(
        result
    )


def run_result(mode: str = 'full') -> dict[str, Any]:
    """A result as Bench.run builds it, from figures with made-up samples."""
    mono = Figure(
        '2a_push_mono', '1 GiB monolithic push', 'MB/s', 'higher', ('ratio', '>=', 1.0)
    )
    head = Figure('6_head_rps_w1', 'manifest HEAD req/s', 'req/s', 'higher')
    for v in (300.0, 320.0, 310.0):
        mono.add(OCI, v)
    for v in (180.0, 185.0, 175.0):
        mono.add(DIST, v)
    for v in (15000.0, 16000.0, 15500.0):
        head.add(OCI, v)
    for v in (1200.0, 1250.0, 1300.0):
        head.add(DIST, v)
    figures = [mono.summary(), head.summary()]
    limits = {
        'sha256_MBps': {'median': 1600.0, 'samples': [1600.0]},
        'disk_write_fsync_MBps': {'median': 400.0, 'samples': [400.0]},
        'push_ceiling_MBps': {'median': 400.0, 'samples': [400.0]},
        'falcon_bare_head_rps': {'median': 20000.0, 'samples': [20000.0]},
    }
    return {
        'started': '2026-12-07T17:00:00+00:00',
        'duration_s': 60.0,
        'mode': mode,
        'plan': {
            'connections': 32,
            'rate_seconds': 2,
            'startup_reps': 3,
            'transfer_reps': 3,
            'small_reps': 3,
            'list_reps': 3,
            'list_requests': 20,
            'rate_reps': 3,
            'concurrent_reps': 3,
        },
        'environment': {
            'cpu': 'x',
            'cores': 2,
            'memory': '1 GiB',
            'kernel': 'k',
            'os': 'o',
            'filesystem': 'ext4',
            'oci_ref': 'oci-ref 0.1.0',
            'oci_ref_git': 'abc',
            'distribution': None,
            'python': '3.11',
            'packages': {},
            'loadgen': {'GET': 'wrk', 'HEAD': 'hey'},
            'oci_ref_flags': '',
            'distribution_config': '',
        },
        'limits': limits,
        'figures': figures,
        'ceilings': ceiling_rows(figures, limits),
        'noise': harness_noise(figures),
        'raw': {'push_mono': [{'server': OCI, 'other_cores': 0.1}]},
    }


def test_markdown_of_a_run_with_ceilings() -> None:
    result = run_result()
    md = markdown(result)
    # push: 310 of a 400 MB/s ceiling, 77 % (met); HEAD: 15,500 of 20,000, 78 % (met)
    assert '| 2a | 1 GiB monolithic push | MB/s | 400 | 310 | 78% | 180 | 45% ' in md
    assert '| 6 | manifest HEAD req/s | req/s | 20,000 | 15,500 | 78% | 1,250 | 6% ' in md
    assert '| bare Falcon app on uvicorn, 1 KiB body: HEAD | 20,000 | req/s |' in md
    assert 'Every target is met.' in md
    assert 'A/A noise of the harness' in md
    assert 'oci-ref: median 0.10, max 0.10' in md


def test_a_missed_ceiling_is_a_missed_target() -> None:
    result = run_result()
    result['limits']['push_ceiling_MBps']['median'] = 1000.0
    result['ceilings'] = ceiling_rows(result['figures'], result['limits'])
    md = markdown(result)
    assert 'Targets missed: 1 GiB monolithic push (≥ 70% of the ceiling).' in md
    assert '| **no** |' in md


def test_quick_run_says_it_is_a_smoke_test() -> None:
    assert 'a smoke test' in markdown(run_result('quick'))


def with_new_columns(result: dict[str, Any]) -> dict[str, Any]:
    """The run with the replicas' column on the push and a pull-through figure."""
    push = Figure('2a_push_mono', '1 GiB monolithic push', 'MB/s', 'higher',
                  ('ratio', '>=', 1.0), columns=(SCALE,))
    ttfb = Figure('9c_cache_cold_ttfb', 'time to first byte of a cold blob', 'ms',
                  'lower', ('diff', '<=', 5.0), oci_label=CACHE, baseline=UPSTREAM)
    for oci, dist, scale in ((310.0, 180.0, 90.0), (300.0, 170.0, 100.0)):
        push.add(OCI, oci)
        push.add(DIST, dist)
        push.add(SCALE, scale)
    for cache, direct in ((3.0, 1.0), (4.0, 1.5)):
        ttfb.add(CACHE, cache)
        ttfb.add(UPSTREAM, direct)
    result['figures'] = [push.summary(), *result['figures'][1:], ttfb.summary()]
    return result


def test_markdown_shows_the_replicas_column_and_the_cache() -> None:
    md = markdown(with_new_columns(run_result()))
    # replicas: 95 MB/s, 0.31 of one node (305), 0.54 of distribution (175): missed
    assert (f'| 2a | 1 GiB monolithic push | MB/s | {SCALE} | 95.0 | 305 | 0.31 | 175 '
            '| 0.54 | ratio ≥ 1 | **no** |') in md
    # the cache: 3.50 ms against the upstream's 1.25 ms, 2.25 ms more: met
    assert (f'| 9c | time to first byte of a cold blob | ms | {CACHE} | 3.50 | {UPSTREAM} '
            '| 1.25 | 2.80 | +2.25 | difference ≤ 5 | yes |') in md
    assert f'Targets missed: 1 GiB monolithic push, {SCALE}.' in md
    # the cache's figure is not in the table against distribution
    main = md.split('Every target')[0].split('Targets missed')[0]
    assert 'time to first byte' not in main


def test_markdown_without_new_columns_has_no_new_tables() -> None:
    md = markdown(run_result())
    assert 'Scale-out (issue 14)' not in md and 'Pull-through cache' not in md


def test_newest_result_prefers_a_full_run(tmp_path: Path) -> None:
    assert newest_result(tmp_path) is None
    (tmp_path / '20261207T100000Z-quick.json').write_text('{}')
    assert newest_result(tmp_path) == tmp_path / '20261207T100000Z-quick.json'
    (tmp_path / '20261206T100000Z.json').write_text('{}')
    (tmp_path / '20261207T110000Z-quick.json').write_text('{}')
    assert newest_result(tmp_path) == tmp_path / '20261206T100000Z.json'
    (tmp_path / '20261207T120000Z.json').write_text('{}')
    assert newest_result(tmp_path) == tmp_path / '20261207T120000Z.json'
    # a partial run (--only) lacks figures: never the page's source
    (tmp_path / '20261207T130000Z-partial.json').write_text('{}')
    (tmp_path / '20261207T140000Z-quick-partial.json').write_text('{}')
    assert newest_result(tmp_path) == tmp_path / '20261207T120000Z.json'


def test_median_of_recorded_samples_matches_the_figure() -> None:
    """The stored medians are the medians of the stored samples."""
    for path in STORED:
        for f in json.loads(path.read_text())['figures']:
            if f['oci_ref'] is not None:
                assert f['oci_ref'] == pytest.approx(median(f['samples'][f['oci_server']]))
