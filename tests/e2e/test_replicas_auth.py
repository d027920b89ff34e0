"""Token auth across replicas (issue 14: "every replica can serve every request").

Three `oci-ref serve` replicas, each with a root of its own (nothing shared on
disk), metadata in one PostgreSQL database, blobs in S3 (moto), behind haproxy
round-robin: the token signing key and the failed-login counts live in the
metadata store, so a token from any replica is good on every other, and failed
logins spread over the replicas spend one budget.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_replicas import own_roots
from tests.engines import S3Bucket
from tests.interop.auth import RegistryAuth, basic_header, write_htpasswd
from tests.replicas import LoadBalancer, Replicas, s3_settings
from tests.support import push_image, stored_token_key

pytestmark = [pytest.mark.e2e, pytest.mark.engines]

USERS = {'alice': 'alice-Replica-pw-1', 'bob': 'bob-Replica-pw-2'}
WRONG = 'not-the-password-3'
LIMIT = 6  # failed logins a minute (login_failures)
COUNT = 3


@pytest.fixture
def token_replicas(tmp_path: Path, postgres_url: str, s3_bucket: S3Bucket,
                   load_balancer: LoadBalancer) -> Iterator[Replicas]:
    htpasswd = write_htpasswd(tmp_path / 'htpasswd', USERS)
    env, settings = s3_settings(s3_bucket)
    with Replicas(tmp_path, postgres_url, load_balancer, COUNT, env=env,
                  each=own_roots(tmp_path, COUNT), auth='token', htpasswd=htpasswd,
                  login_failures=LIMIT, **settings) as replicas:
        replicas.metadata_url = postgres_url  # type: ignore[attr-defined]
        yield replicas


def token_from(url: str, scope: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.get('/token', params={'service': 'oci-ref', 'scope': scope},
                  headers={'Authorization': basic_header('alice', USERS['alice'])})
        assert r.status_code == 200, r.text
        return str(r.json()['token'])


def test_a_token_from_one_replica_is_good_on_every_other(
        token_replicas: Replicas) -> None:
    """Replicas started together agree on one key, kept in PostgreSQL (no key file
    on any replica's disk): a token fetched from each replica opens an upload on
    each other one; and a client's token dance through the load balancer, whose
    /token and registry requests land on different replicas, pushes and pulls."""
    servers = token_replicas.servers
    key = stored_token_key(servers[0].root, token_replicas.metadata_url)  # type: ignore[attr-defined]
    assert key is not None and len(key) == 32
    for server in servers:
        assert not list(server.root.glob('.token-key*'))
    scope = 'repository:alice/app:pull,push'
    for issuer, user in itertools.permutations(servers, 2):
        token = token_from(issuer.url, scope)
        with httpx.Client(base_url=user.url, timeout=30) as c:
            r = c.post('/v2/alice/app/blobs/uploads/',
                       headers={'Authorization': f'Bearer {token}'})
            assert r.status_code == 202, (issuer.url, user.url, r.text)
    with httpx.Client(base_url=token_replicas.url, timeout=60,
                      auth=RegistryAuth('alice', USERS['alice'])) as c:
        _, manifest = push_image(c, 'alice/app', 'v1', seed='replicas')
        r = c.get('/v2/alice/app/manifests/v1',
                  headers={'Accept': 'application/vnd.oci.image.manifest.v1+json'})
        assert r.status_code == 200 and r.content == manifest
    # Every replica issued tokens and served registry requests.
    assert all(token_replicas.requests_seen('GET', '/token?'))
    served = [sum(counts) for counts in zip(*(
        token_replicas.requests_seen(method, '/v2/alice/app/')
        for method in ('HEAD', 'GET', 'POST', 'PUT')), strict=True)]
    assert all(served), served
    for server in servers:
        assert key.hex() not in server.log.read_text(errors='replace')


def test_failed_logins_spread_over_replicas_spend_one_budget(
        token_replicas: Replicas) -> None:
    """LIMIT wrong passwords through the load balancer land LIMIT / 3 on each
    replica, fewer than any one replica's limit: the next login is refused (429,
    Retry-After) on every replica all the same, even with the right password."""
    with httpx.Client(base_url=token_replicas.url, timeout=30) as c:
        for _ in range(LIMIT):
            r = c.get('/token', params={'service': 'oci-ref'},
                      headers={'Authorization': basic_header('alice', WRONG)})
            assert r.status_code == 401, r.text
    seen = token_replicas.requests_seen('GET', '/token?')
    assert seen == [LIMIT // COUNT] * COUNT, seen  # each below the limit by itself
    for server in token_replicas.servers:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.get('/token', params={'service': 'oci-ref'},
                      headers={'Authorization': basic_header('alice',
                                                             USERS['alice'])})
            assert r.status_code == 429, (server.url, r.text)
            assert r.json()['errors'][0]['code'] == 'TOOMANYREQUESTS'
            assert 1 <= int(r.headers['retry-after']) <= 61
            # Anonymous requests spend no login: still answered (a challenge).
            assert c.get('/v2/').status_code == 401
