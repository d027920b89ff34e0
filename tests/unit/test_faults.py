"""The --faults spec parser, the endpoint of a request, and seeded draws."""

from __future__ import annotations

from typing import Any

import pytest

from oci_ref.config import Config, ConfigError
from oci_ref.faults import ENDPOINT_IDS, FaultSpecError, Plan, Rule, parse, scope_endpoint


def test_parse_the_readme_example() -> None:
    rules = parse('blob-get:truncate=0.1,manifest-get:429(2)=0.2,*:reset=0.05')
    assert rules == (
        Rule(frozenset({'end-2'}), 'truncate', 0.1),
        Rule(frozenset({'end-3'}), '429', 0.2, 2.0),
        Rule(ENDPOINT_IDS, 'reset', 0.05),
    )
    assert rules[1].value == 2.0 and rules[0].value == 0


@pytest.mark.parametrize('spec, endpoints', [
    ('end-4a+end-11:500=1', {'end-4a', 'end-11'}),
    ('upload-start:503=1', {'end-4a', 'end-4b'}),
    ('writes:500=0.5', {'end-4a', 'end-4b', 'end-5', 'end-6', 'end-7', 'end-9',
                        'end-10', 'end-11', 'end-14'}),
    ('catalog+tags:slow(0.5)=1', {'catalog', 'end-8'}),
])
def test_parse_endpoints(spec: str, endpoints: set[str]) -> None:
    (rule,) = parse(spec)
    assert rule.endpoints == endpoints


def test_defaults_of_the_parameters() -> None:
    assert [r.value for r in parse('*:429=1,*:503=1,*:slow=1,*:500=1')] == [1, 1, 2, 0]
    assert parse('') == () and parse(' , ') == ()


@pytest.mark.parametrize('spec, says', [
    ('blob-get:truncate', 'is not ENDPOINTS:KIND'),
    ('blob-get:explode=0.1', "unknown kind 'explode'"),
    ('blobs:429=0.1', "unknown endpoint 'blobs'"),
    ('blob-get:429=1.5', 'between 0 and 1'),
    ('blob-get:429=0.1.2', 'between 0 and 1'),
    ('blob-get:429=x', 'is not ENDPOINTS:KIND'),
    ('blob-get:429=x1.5', 'is not ENDPOINTS:KIND'),
    ('blob-get:truncate(3)=0.1', 'takes no parameter'),
    ('end-2:500(1)=0.1', 'takes no parameter'),
])
def test_parse_errors_name_the_part(spec: str, says: str) -> None:
    with pytest.raises(FaultSpecError, match=r'faults: .*' + says.replace('(', r'\(')):
        parse(spec)


def test_a_bad_spec_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match='unknown kind'):
        Config.load({'faults': '*:boom=1'}, environ={})
    assert Config.load({'faults': '*:500=0.5', 'faults_seed': '3'},
                       environ={}).faults_seed == 3


def _scope(method: str, path: str, query: bytes = b'') -> dict[str, Any]:
    return {'type': 'http', 'method': method, 'path': path, 'query_string': query}


@pytest.mark.parametrize('method, path, query, endpoint', [
    ('GET', '/v2/', b'', 'end-1'),
    ('GET', '/v2/a/b/blobs/sha256:00', b'', 'end-2'),
    ('HEAD', '/v2/a/manifests/v1', b'', 'end-3'),
    ('POST', '/v2/a/blobs/uploads/', b'', 'end-4a'),
    ('POST', '/v2/a/blobs/uploads/', b'digest=sha256:00', 'end-4b'),
    ('POST', '/v2/a/blobs/uploads/', b'mount=sha256:00&from=b', 'end-11'),
    ('PATCH', '/v2/a/blobs/uploads/0f-1', b'', 'end-5'),
    ('PUT', '/v2/a/blobs/uploads/0f-1', b'digest=x', 'end-6'),
    ('PUT', '/v2/a/manifests/v1', b'', 'end-7'),
    ('GET', '/v2/a/tags/list', b'n=1', 'end-8'),
    ('DELETE', '/v2/a/manifests/sha256:00', b'', 'end-9'),
    ('DELETE', '/v2/a/blobs/sha256:00', b'', 'end-10'),
    ('GET', '/v2/a/referrers/sha256:00', b'', 'end-12'),
    ('GET', '/v2/a/blobs/uploads/0f-1', b'', 'end-13'),
    ('DELETE', '/v2/a/blobs/uploads/0f-1', b'', 'end-14'),
    ('GET', '/v2/_catalog', b'', 'catalog'),
    ('GET', '/v2/a/nothing', b'', 'other'),
    # a name holding a suffix's words still routes from the right
    ('GET', '/v2/a/manifests/b/blobs/sha256:00', b'', 'end-2'),
])
def test_scope_endpoint(method: str, path: str, query: bytes, endpoint: str) -> None:
    assert scope_endpoint(_scope(method, path, query)) == endpoint


def _decisions(plan: Plan, requests: list[tuple[str, str]]) -> list[str | None]:
    out = []
    for method, path in requests:
        rule = plan.decide(method, path, 'end-2')
        out.append(rule.kind if rule else None)
    return out


REQUESTS = [('GET', f'/v2/r/blobs/sha256:{i % 7:02}') for i in range(200)]


def test_same_seed_same_faults() -> None:
    rules = parse('blob-get:truncate=0.2,blob-get:503=0.3')
    first = _decisions(Plan(rules, 42), REQUESTS)
    assert first == _decisions(Plan(rules, 42), REQUESTS)
    assert first != _decisions(Plan(rules, 43), REQUESTS)
    assert {'truncate', '503', None} == set(first)


def test_interleaving_does_not_change_a_paths_faults() -> None:
    """The n-th request for a path gets the same fault whatever came between."""
    rules = parse('blob-get:500=0.5')
    plan_a, plan_b = Plan(rules, 9), Plan(rules, 9)
    a = _decisions(plan_a, REQUESTS)
    reordered = sorted(range(len(REQUESTS)), key=lambda i: (REQUESTS[i][1], i))
    b = dict(zip(reordered, _decisions(plan_b, [REQUESTS[i] for i in reordered]),
                 strict=True))
    assert a == [b[i] for i in range(len(REQUESTS))]


def test_a_retry_draws_anew() -> None:
    plan = Plan(parse('blob-get:500=0.5'), 1)
    seen = _decisions(plan, [('GET', '/v2/r/blobs/sha256:aa')] * 64)
    assert '500' in seen and None in seen


@pytest.mark.parametrize('rate', [0.0, 0.1, 0.5, 1.0])
def test_the_rate_is_the_share_of_requests(rate: float) -> None:
    plan = Plan(parse(f'blob-get:500={rate}'), 5)
    hits = sum(k == '500' for k in _decisions(
        plan, [('GET', f'/v2/r/blobs/{i}') for i in range(4000)]))
    assert abs(hits / 4000 - rate) < 0.03


def test_rules_apply_to_their_endpoints_only() -> None:
    plan = Plan(parse('manifest-get:500=1'), 5)
    assert plan.decide('GET', '/v2/r/blobs/x', 'end-2') is None
    rule = plan.decide('GET', '/v2/r/manifests/x', 'end-3')
    assert rule is not None and rule.kind == '500'


def test_first_n_requests_per_path() -> None:
    (rule,) = parse('blob-get:503=x2')
    assert rule.first == 2 and rule.rate == 1.0
    plan = Plan((rule,), 0)
    for path in ('/v2/r/blobs/a', '/v2/r/blobs/b'):
        assert _decisions(plan, [('GET', path)] * 4) == ['503', '503', None, None]
    # HEAD is its own count
    assert _decisions(plan, [('HEAD', '/v2/r/blobs/a')]) == ['503']


def test_config_does_not_import_prometheus_client() -> None:
    """`oci-ref serve` sets PROMETHEUS_MULTIPROC_DIR after loading the config, and
    prometheus_client reads it on import: validating faults and variations must not
    import it."""
    import subprocess
    import sys

    code = ('import sys; from oci_ref.config import Config; '
            "Config.load({'faults': '*:500=0.1', 'variations': 'warnings'}, environ={}); "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == 'False'
