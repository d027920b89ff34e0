"""HTTPS: `oci-ref serve --tls-cert/--tls-key` with a CA made by openssl for this test
run (server certificate for 127.0.0.1, SAN IP:127.0.0.1). Clients that trust the CA
get through; clients that do not, fail; real clients (skopeo with --dest-cert-dir,
crane with SSL_CERT_FILE) push and pull over TLS with basic auth."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.interop.auth import (
    AuthServer,
    ca_context,
    make_ca_and_server_cert,
    write_htpasswd,
)
from tests.interop.conftest import find_client
from tests.interop.layout import write_docker_archive, write_image_layout
from tests.interop.util import run
from tests.support import OCI_MANIFEST, push_image

pytestmark = pytest.mark.e2e

USER, PASSWORD = 'tls-user', 'tls-user-password-9931'


@pytest.fixture(scope='module')
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_ca_and_server_cert(tmp_path_factory.mktemp('pki'))


@pytest.fixture(scope='module')
def tls_server(pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[AuthServer]:
    base = tmp_path_factory.mktemp('tls')
    htpasswd = write_htpasswd(base / 'htpasswd', {USER: PASSWORD})
    srv = AuthServer(base / 'data', '--tls-cert', str(pki['cert']), '--tls-key',
                     str(pki['key']), '--auth', 'basic', '--htpasswd', str(htpasswd),
                     ca=pki['ca'])
    yield srv
    srv.stop()


def test_https_with_the_ca_works_and_without_it_fails(tls_server: AuthServer,
                                                      pki: dict[str, Path]) -> None:
    assert tls_server.url.startswith('https://127.0.0.1:')
    with tls_server.client(USER, PASSWORD) as c:
        assert c.get('/v2/').status_code == 200
        _, body = push_image(c, 'tls/app', 'v1', seed='https')
        r = c.get('/v2/tls/app/manifests/v1', headers={'Accept': OCI_MANIFEST})
        assert r.status_code == 200 and r.content == body
        assert r.http_version == 'HTTP/1.1'
    # The system trust store does not know our CA.
    with pytest.raises(httpx.ConnectError, match='CERTIFICATE_VERIFY_FAILED'):
        httpx.get(tls_server.url + '/v2/', timeout=10)
    # The certificate is for IP 127.0.0.1 only: another name for the same socket fails.
    with pytest.raises(httpx.ConnectError, match=r'CERTIFICATE_VERIFY_FAILED|match'):
        httpx.get(f'https://localhost:{tls_server.port}/v2/', timeout=10,
                  verify=ca_context(pki['ca']))
    # Plain HTTP on the TLS port gets no registry answer.
    try:
        r = httpx.get(f'http://127.0.0.1:{tls_server.port}/v2/', timeout=10)
    except httpx.TransportError:
        pass
    else:
        assert r.status_code not in (200, 401), r.status_code


@pytest.mark.skopeo
def test_skopeo_pushes_and_pulls_over_tls_with_basic_auth(
        tls_server: AuthServer, pki: dict[str, Path], tmp_path: Path) -> None:
    skopeo = find_client('skopeo')
    certs = tmp_path / 'certs.d'  # only the CA: a *.key there would be a client key
    certs.mkdir()
    shutil.copy(pki['ca'], certs / 'ca.crt')
    digest = write_image_layout(tmp_path / 'src', 'v1', seed='skopeo over tls')
    ref = f'docker://{tls_server.host}/tls/skopeo:v1'
    env = {'REGISTRY_AUTH_FILE': str(tmp_path / 'auth.json'), 'HOME': str(tmp_path)}
    (tmp_path / 'auth.json').write_text('{"auths": {}}')
    run([skopeo, 'copy', '--dest-cert-dir', str(certs), '--dest-creds',
         f'{USER}:{PASSWORD}', '--digestfile', str(tmp_path / 'digest'),
         f'oci:{tmp_path / "src"}:v1', ref], registry=tls_server, env=env)
    assert (tmp_path / 'digest').read_text().strip() == digest
    raw = run([skopeo, 'inspect', '--raw', '--cert-dir', str(certs), '--creds',
               f'{USER}:{PASSWORD}', ref], registry=tls_server, env=env).stdout
    assert json.loads(raw)['mediaType'] == OCI_MANIFEST
    run([skopeo, 'copy', '--src-cert-dir', str(certs), '--src-creds',
         f'{USER}:{PASSWORD}', ref, f'oci:{tmp_path / "out"}:v1'],
        registry=tls_server, env=env)
    index = json.loads((tmp_path / 'out' / 'index.json').read_text())
    assert index['manifests'][0]['digest'] == digest
    # Without the CA: a certificate error, nothing else.
    done = run([skopeo, 'inspect', '--raw', '--creds', f'{USER}:{PASSWORD}', ref],
               registry=tls_server, env=env, check=False)
    assert done.returncode != 0
    assert 'x509' in done.stderr or 'certificate' in done.stderr, done.stderr


@pytest.mark.crane
def test_crane_pushes_and_pulls_over_tls_with_basic_auth(
        tls_server: AuthServer, pki: dict[str, Path], tmp_path: Path) -> None:
    crane = find_client('crane')
    config = tmp_path / 'docker-config'
    config.mkdir()
    env = {'DOCKER_CONFIG': str(config), 'SSL_CERT_FILE': str(pki['ca']),
           'HOME': str(tmp_path)}
    run([crane, 'auth', 'login', tls_server.host, '-u', USER, '--password-stdin'],
        registry=tls_server, env=env, input=PASSWORD)
    image_id = write_docker_archive(tmp_path / 'img.tar', 'example/tls:v1',
                                    seed='crane over tls')
    ref = f'{tls_server.host}/tls/crane:v1'
    run([crane, 'push', str(tmp_path / 'img.tar'), ref], registry=tls_server, env=env)
    digest = run([crane, 'digest', ref], registry=tls_server, env=env).stdout.strip()
    assert digest.startswith('sha256:')
    run([crane, 'pull', ref, str(tmp_path / 'out.tar')], registry=tls_server, env=env)
    with tarfile.open(tmp_path / 'out.tar') as tar:
        saved = json.load(tar.extractfile('manifest.json'))  # type: ignore[arg-type]
    assert saved[0]['Config'].endswith(image_id.split(':')[1])
    # Without the CA (the system store only): a certificate error.
    done = run([crane, 'digest', ref], registry=tls_server, check=False,
               env={**env, 'SSL_CERT_FILE': '/dev/null', 'SSL_CERT_DIR': '/nonexistent'})
    assert done.returncode != 0
    assert 'x509' in done.stderr or 'certificate' in done.stderr, done.stderr
