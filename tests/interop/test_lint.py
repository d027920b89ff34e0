"""Real clients through `oci-ref serve --lint`: push and pull, then the report.

Each client must show up in the report under its own User-Agent with the requests
it sent, and must trip none of the rules that well-behaved clients keep (a finding
there would be the linter's false positive, or a client regression worth knowing);
crane and skopeo stream their blob PATCH, which the linter must see. The full table
of every client is docs/clients-lint.md (`make clients-lint-report`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import find_client
from tests.interop.layout import write_docker_archive, write_image_layout
from tests.interop.util import host, run
from tests.support import Server

pytestmark = [pytest.mark.interop]

# Rules none of these clients breaks in their push and pull (docs/clients-lint.md).
KEPT = {'manifest-content-type', 'manifest-content-type-params', 'manifest-accept',
        'chunk-out-of-order', 'chunk-range-syntax', 'upload-url-hand-built',
        'upload-url-stale', 'pagination-link', 'retry-after-ignored', 'ns-not-proxy',
        'credentials-cleartext', 'credentials-in-query', 'credentials-to-proxy'}


@pytest.fixture(scope='module')
def lint_registry(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if request.config.getoption('--registry') != 'oci-ref':
        pytest.skip('the client linter is oci-ref\'s own')
    srv = Server(tmp_path_factory.mktemp('interop-lint') / 'data', '--lint')
    yield srv
    srv.stop()


def crane(srv: Server, work: Path, repo: str) -> None:
    exe = find_client('crane')
    write_docker_archive(work / 'img.tar', 'example/app:v1', seed=repo)
    ref = f'{host(srv)}/{repo}:v1'
    run([exe, 'push', str(work / 'img.tar'), ref, '--insecure'], registry=srv)
    run([exe, 'pull', ref, str(work / 'out.tar'), '--insecure'], registry=srv)
    run([exe, 'ls', f'{host(srv)}/{repo}', '--insecure'], registry=srv)


def oras(srv: Server, work: Path, repo: str) -> None:
    exe = find_client('oras')
    (work / 'hello.txt').write_text(f'hello {repo}\n')
    ref = f'{host(srv)}/{repo}:v1'
    run([exe, 'push', '--plain-http', ref, 'hello.txt:text/plain'], registry=srv,
        cwd=work)
    run([exe, 'pull', '--plain-http', '-o', 'out', ref], registry=srv, cwd=work)
    assert (work / 'out' / 'hello.txt').read_text() == f'hello {repo}\n'


def skopeo(srv: Server, work: Path, repo: str) -> None:
    exe = find_client('skopeo')
    write_image_layout(work / 'src', 'v1', seed=repo)
    ref = f'docker://{host(srv)}/{repo}:v1'
    run([exe, 'copy', '--dest-tls-verify=false', f'oci:{work / "src"}:v1', ref],
        registry=srv)
    run([exe, 'copy', '--src-tls-verify=false', ref, f'oci:{work / "out"}:v1'],
        registry=srv)


CLIENTS: dict[str, tuple[Callable[[Server, Path, str], None], str, set[str]]] = {
    # name: (push and pull, User-Agent part, rules it must be reported for)
    'crane': (crane, 'crane/', {'chunk-streamed'}),
    'oras': (oras, 'oras', set()),
    'skopeo': (skopeo, 'skopeo/', {'chunk-streamed'}),
}


@pytest.mark.parametrize('client', [pytest.param(name, marks=getattr(pytest.mark, name))
                                    for name in sorted(CLIENTS)])
def test_real_client_through_the_linter(lint_registry: Server, tmp_path: Path,
                                        client: str) -> None:
    """push and pull with the linter on; the client's lint report"""
    drive, agent, expected = CLIENTS[client]
    drive(lint_registry, tmp_path, f'lint/{client}')
    report = lint_registry.lint_report()
    mine: list[dict[str, Any]] = [c for c in report['clients']
                                  if agent in c['user_agent']]
    assert mine, [c['user_agent'] for c in report['clients']]
    assert sum(c['requests'] for c in mine) > 3
    fired = {r['id'] for c in mine for r in c['rules']}
    assert expected <= fired, fired
    assert not fired & KEPT, [r for c in mine for r in c['rules'] if r['id'] in KEPT]
    lint_registry.assert_no_lint_violations(
        agent, ignore=sorted(set(report['rules']) - KEPT))
