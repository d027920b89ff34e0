"""The pull-through cache's metrics per upstream (issue 13): Prometheus counters that
work with several workers as the app's others do (oci_ref/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter('oci_ref_upstream_cache_events',
                 'Pull-through cache: hit, miss, stale (served past tag_ttl because '
                 'the upstream failed), revalidated, upstream_error',
                 ['upstream', 'event'])
FETCHED = Counter('oci_ref_upstream_fetched_bytes', 'Blob bytes fetched from upstreams',
                  ['upstream'])
IN_FLIGHT = Gauge('oci_ref_upstream_fetches_in_flight', 'Blob downloads in progress',
                  ['upstream'], multiprocess_mode='livesum')
WAITING = Gauge('oci_ref_upstream_fetch_waits',
                'Manifest fetches and tag validations waiting for another worker '
                'doing the same upstream request', ['upstream'],
                multiprocess_mode='livesum')
EVICTED = Counter('oci_ref_upstream_evicted',
                  'Pull-through cache eviction (cache_max_bytes): cached manifests '
                  '(kind=manifest) and blobs (kind=blob) removed, least recently used '
                  'first', ['upstream', 'kind'])
EVICTED_BYTES = Counter('oci_ref_upstream_evicted_bytes',
                        'Bytes the pull-through cache stopped holding by eviction',
                        ['upstream'])
