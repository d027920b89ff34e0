"""The push/pull/copy flows of skopeo, podman, crane and oras through replicas (issue 14).

The same tests as test_skopeo.py, test_podman.py, test_crane.py and test_oras.py,
collected again here with ``registry`` overridden: two `oci-ref serve` replicas on
one PostgreSQL database with their blobs in one S3 bucket (moto), each with its own
root, behind haproxy round-robin without stickiness. A client's consecutive requests
land on alternate replicas: a blob upload started on one continues on the other, a
manifest pushed through one is checked through the other. After each flow, both
replicas must have answered some of its requests.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.engines import MotoServer, PostgresServer
from tests.interop import test_crane, test_oras, test_podman, test_skopeo
from tests.replicas import Replicas, ReplicaSets

pytestmark = [pytest.mark.interop, pytest.mark.engines]


@pytest.fixture(scope='module')
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             postgres_server: PostgresServer, s3_server: MotoServer
             ) -> Iterator[Replicas]:
    """Two replicas on PostgreSQL + S3 behind haproxy, once for the module."""
    if request.config.getoption('--registry') != 'oci-ref':
        pytest.skip('replicas are oci-ref replicas: no control-peer equivalent')
    sets = ReplicaSets(postgres_server, s3_server, count=2, blobs='s3')
    base = tmp_path_factory.mktemp('replicas')
    # Each replica its own root: nothing but PostgreSQL and S3 is shared.
    with sets.serve(base / 'data', each=[{'root': base / f'r{i}'} for i in range(2)]
                    ) as replicas:
        yield replicas


@pytest.fixture(autouse=True)
def _both_replicas_answered(registry: Replicas) -> Iterator[None]:
    """Each flow really went through both replicas (no stickiness)."""
    marks = [log.stat().st_size for log in registry.logs]
    yield
    served = []
    for log, mark in zip(registry.logs, marks, strict=True):
        with open(log, 'rb') as f:
            f.seek(mark)
            since = f.read().decode(errors='replace')
        served.append(len(re.findall(r'"[A-Z]+ /v2/\S* HTTP/1\.1" \d', since)))
    assert all(served), ('requests answered by each replica', served)


def _through_replicas(test: Callable[..., None], client: str) -> Callable[..., None]:
    """``test`` collected here too, with its client marker (and its own marks,
    parametrization included); the fixtures it asks for come from this module."""

    @functools.wraps(test)
    def again(*args: Any, **kwargs: Any) -> None:
        test(*args, **kwargs)

    # The interop report lists these under the same client, as their own operations.
    first = (test.__doc__ or test.__name__).strip().splitlines()[0].rstrip('.')
    again.__doc__ = f'{first}, through 2 replicas on PostgreSQL + S3 behind haproxy'
    again.pytestmark = [*getattr(test, 'pytestmark', []),  # type: ignore[attr-defined]
                        getattr(pytest.mark, client)]
    return again


# Each client's module, and its flows collected again here (by their own names).
FLOWS = {
    test_skopeo: ('test_skopeo_copy_all_index_in_and_out',
                  'test_skopeo_list_tags_copy_between_repos_and_delete'),
    test_podman: ('test_podman_pull_tag_push_pull_back',
                  'test_podman_load_push_big_layer'),
    test_crane: ('test_crane_push_tarball_pull_copy_list_delete',
                 'test_crane_copy_multi_arch_index_and_validate'),
    test_oras: ('test_oras_push_pull_tags_fetch_delete',
                'test_oras_attach_discover_copy_through_referrers_api',
                'test_oras_blob_push_delete_manifest_push_tag'),
}
for _module, _names in FLOWS.items():
    for _name in _names:
        # The client marker: the module's name (tests.interop.test_<client>).
        globals()[_name] = _through_replicas(getattr(_module, _name),
                                             _module.__name__.rsplit('.test_', 1)[1])
