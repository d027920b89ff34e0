"""The request metrics are added per event-loop turn (oci_ref/metrics.py): a tally of
n exchanges goes into the latency histogram through prometheus_client's bucket and
sum counters, which have no public "n observations" call. This checks that adding
a tally is exactly n ``observe()`` calls, so a prometheus_client release that
changes those internals fails here, not in a scrape."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Histogram

from oci_ref.metrics import BUCKETS, _Tally, instruments

SECONDS = [0.0004, 0.001, 0.003, 0.003, 0.2, 7.0, 299.0, 400.0]


def _samples(histogram: object, endpoint: str) -> dict[tuple[str, str], float]:
    return {(s.name.rsplit('_', 1)[1], s.labels.get('le', '')): s.value
            for metric in histogram.collect()  # type: ignore[attr-defined]
            for s in metric.samples
            if s.labels.get('endpoint') == endpoint and not s.name.endswith('_created')}


def test_a_tally_counts_as_that_many_observations() -> None:
    expected = Histogram('tally_check_seconds', 'n observe() calls', ['endpoint'],
                         buckets=BUCKETS, registry=CollectorRegistry())
    tally = _Tally()
    for s in SECONDS:
        expected.labels('end-x').observe(s)
        tally.count += 1
        tally.seconds += s
        tally.buckets[bisect_left(BUCKETS, s)] += 1
    built = instruments()
    built.add(('end-tally-check', 'GET', '200'), tally)
    got = _samples(built.latency, 'end-tally-check')
    want = _samples(expected, 'end-x')
    assert got == want
    assert got[('count', '')] == len(SECONDS) and got[('bucket', '+Inf')] == len(SECONDS)
