"""Real clients pulling through the pull-through cache (issue 13), each in the mirror
style it uses: skopeo with a registries.conf mirror (pull-from-mirror all and
digest-only), crane and oras through the prefix, containerd's ``ctr --hosts-dir``
with a hosts.toml (``override_path``, and a bare host which sends ``ns``).

The upstream is a second oci-ref (its access log counts what the cache fetched);
the source host the clients name, ``up.test``, does not resolve: everything they
get came through the mirror."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import find_client, missing
from tests.interop.daemons import Containerd
from tests.interop.layout import write_index_layout
from tests.interop.util import host, log_mark, log_since, push_layout, run, sha256
from tests.support import Server

pytestmark = [pytest.mark.interop]
SOURCE = 'up.test'


@pytest.fixture(scope='module')
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp('upstream') / 'data')
    yield server
    server.stop()


@pytest.fixture(scope='module')
def mirror(tmp_path_factory: pytest.TempPathFactory, upstream: Server
           ) -> Iterator[Server]:
    base = tmp_path_factory.mktemp('mirror')
    config = base / 'mirror.toml'
    config.write_text(f'[[upstream]]\nname = "{SOURCE}"\nurl = "{upstream.url}"\n'
                      f'namespaces = ["{SOURCE}"]\n')
    server = Server(base / 'data', '--config', str(config))
    yield server
    server.stop()


def seed(upstream: Server, workdir: Path, repo: str) -> str:
    """A two-platform OCI index at the upstream as ``repo:v1``; its digest."""
    digest = write_index_layout(workdir / 'src', 'v1', seed=f'pull-through {repo}')
    push_layout(upstream, workdir / 'src', repo, 'v1')
    return digest


def fetched(upstream: Server, repo: str) -> list[str]:
    """The upstream's 2xx GETs for ``repo`` (what the cache fetched)."""
    return re.findall(rf'"GET (/v2/{re.escape(repo)}/[^ ?]*)[^ ]* HTTP/1.1" 2\d\d',
                      upstream.log.read_text(errors='replace'))


def assert_fetched_once(upstream: Server, repo: str) -> None:
    paths = fetched(upstream, repo)
    assert paths and len(paths) == len(set(paths)), paths


@pytest.mark.skopeo
@pytest.mark.parametrize('pull_from', ['all', 'digest-only'])
def test_skopeo_registries_conf_mirror(mirror: Server, upstream: Server, workdir: Path,
                                       pull_from: str) -> None:
    repo = f'interop/skopeo-mirror-{pull_from}'
    digest = seed(upstream, workdir, repo)
    conf = workdir / 'registries.conf'
    conf.write_text(f'''
[[registry]]
location = "{SOURCE}"
[[registry.mirror]]
location = "{host(mirror)}/{SOURCE}"
insecure = true
pull-from-mirror = "{pull_from}"
''')
    ref = f'{SOURCE}/{repo}' + (':v1' if pull_from == 'all' else f'@{digest}')
    skopeo = find_client('skopeo')
    env = {**os.environ, 'CONTAINERS_REGISTRIES_CONF': str(conf)}
    raw = run([skopeo, '--registries-conf', str(conf), 'inspect', '--raw',
               f'docker://{ref}'], registry=mirror, env=env).stdout
    assert sha256(raw.encode()) == digest
    run([skopeo, '--registries-conf', str(conf), 'copy', '--all', f'docker://{ref}',
         f'oci:{workdir / "out"}:v1'], registry=mirror, env=env)
    index = json.loads((workdir / 'out' / 'index.json').read_text())
    assert index['manifests'][0]['digest'] == digest
    for blob in (workdir / 'src' / 'blobs' / 'sha256').iterdir():
        assert (workdir / 'out' / 'blobs' / 'sha256' / blob.name).read_bytes() == \
            blob.read_bytes()
    assert_fetched_once(upstream, repo)


@pytest.mark.crane
def test_crane_through_the_prefix(mirror: Server, upstream: Server, workdir: Path
                                  ) -> None:
    repo = 'interop/crane-mirror'
    digest = seed(upstream, workdir, repo)
    crane = find_client('crane')
    ref = f'{host(mirror)}/{SOURCE}/{repo}:v1'
    assert run([crane, 'digest', '--insecure', ref], registry=mirror
               ).stdout.strip() == digest
    run([crane, 'pull', '--insecure', '--format', 'oci', ref, str(workdir / 'out')],
        registry=mirror)
    run([crane, 'validate', '--insecure', '--remote', ref], registry=mirror)
    assert run([crane, 'ls', '--insecure', f'{host(mirror)}/{SOURCE}/{repo}'],
               registry=mirror).stdout.split() == ['v1']
    assert_fetched_once(upstream, repo)


@pytest.mark.oras
def test_oras_through_the_prefix(mirror: Server, upstream: Server, workdir: Path) -> None:
    repo = 'interop/oras-mirror'
    oras = find_client('oras')
    (workdir / 'hello.txt').write_text('hello through the cache\n')
    run([oras, 'push', '--plain-http', f'{host(upstream)}/{repo}:v1', 'hello.txt'],
        registry=upstream, cwd=workdir)
    run([oras, 'pull', '--plain-http', '-o', 'out', f'{host(mirror)}/{SOURCE}/{repo}:v1'],
        registry=mirror, cwd=workdir)
    assert (workdir / 'out' / 'hello.txt').read_text() == 'hello through the cache\n'
    assert_fetched_once(upstream, repo)


@pytest.fixture(scope='module')
def containerd() -> Iterator[Containerd]:
    if os.geteuid() != 0:
        missing('containerd needs root')
    d = Containerd(find_client('containerd'), find_client('ctr'))
    yield d
    d.stop()


@pytest.mark.containerd
@pytest.mark.parametrize('style', ['override_path', 'ns'])
def test_ctr_hosts_toml_mirror(mirror: Server, upstream: Server, workdir: Path,
                               containerd: Containerd, style: str) -> None:
    repo = f'interop/ctr-mirror-{style.replace("_", "-")}'
    digest = seed(upstream, workdir, repo)
    hosts = workdir / 'hosts.d' / SOURCE
    hosts.mkdir(parents=True)
    if style == 'override_path':
        entry = (f'[host."http://{host(mirror)}/v2/{SOURCE}"]\n'
                 '  capabilities = ["pull", "resolve"]\n  override_path = true\n')
    else:
        entry = f'[host."http://{host(mirror)}"]\n  capabilities = ["pull", "resolve"]\n'
    (hosts / 'hosts.toml').write_text(f'server = "https://{SOURCE}"\n\n{entry}')
    ref = f'{SOURCE}/{repo}:v1'
    mark = log_mark(mirror)
    run([*containerd.ctr_cmd, 'images', 'pull', '--hosts-dir', str(workdir / 'hosts.d'),
         '--all-platforms', '--snapshotter', 'native', ref], registry=mirror)
    listed = run([*containerd.ctr_cmd, 'images', 'ls'], registry=mirror).stdout
    assert digest in listed
    seen = re.findall(r'"(?:GET|HEAD) (/v2/[^ ]*) HTTP', log_since(mirror, mark))
    assert seen
    if style == 'ns':  # distribution-spec §Registry Proxying, as containerd sends it
        assert all(p.startswith(f'/v2/{repo}/') and p.endswith(f'ns={SOURCE}')
                   for p in seen), seen
    else:
        assert all(p.startswith(f'/v2/{SOURCE}/{repo}/') for p in seen), seen
    run([*containerd.ctr_cmd, 'images', 'rm', '--sync', ref], registry=mirror)
    assert_fetched_once(upstream, repo)


@pytest.mark.cosign
def test_cosign_verifies_through_the_cache_with_the_upstream_stopped(
        tmp_path: Path, workdir: Path) -> None:
    """A key-signed image (tag-schema signature) verified through the prefix; then the
    upstream stops and cosign verifies again from the cache alone."""
    from tests.interop.test_cosign import key_pair, sign, verify
    from tests.interop.test_cosign import seed as seed_image

    up = Server(tmp_path / 'up')
    m = None
    try:
        repo = 'interop/cosign-mirror'
        digest = seed_image(up, workdir, repo)
        keys = key_pair(up, workdir, 'keys')
        sign(up, workdir, keys, f'{host(up)}/{repo}@{digest}')
        config = tmp_path / 'mirror.toml'
        config.write_text(f'[[upstream]]\nname = "{SOURCE}"\nurl = "{up.url}"\n')
        m = Server(tmp_path / 'mirror', '--config', str(config))
        image = f'{host(m)}/{SOURCE}/{repo}@{digest}'
        verify(m, workdir, keys, image)
        up.stop()
        code, out = verify(m, workdir, keys, image, check=False)
        assert code == 0, out
    finally:
        if m is not None:
            m.stop()
        up.stop()


@pytest.mark.podman
def test_podman_registries_conf_mirror(mirror: Server, upstream: Server,
                                       workdir: Path) -> None:
    from tests.interop.conftest import storage_driver
    from tests.interop.util import ContainersTool

    repo = 'interop/podman-mirror'
    digest = seed(upstream, workdir, repo)
    exe = find_client('podman')
    driver, error = storage_driver(exe)
    if driver is None:
        missing(f'podman cannot set up its storage here: {error}')
    assert driver is not None
    podman = ContainersTool(exe, mirror, Path(tempfile.mkdtemp(prefix='podman-')), driver)
    try:
        (podman.base / 'registries.conf').write_text(f'''
unqualified-search-registries = []
[[registry]]
location = "{SOURCE}"
[[registry.mirror]]
location = "{host(mirror)}/{SOURCE}"
insecure = true
''')
        podman('pull', f'{SOURCE}/{repo}:v1')
        listed = podman('images', '--digests', '--format', '{{.Digest}}')
        assert digest in listed.split()
    finally:
        podman.cleanup()
        shutil.rmtree(podman.base, ignore_errors=True)
    assert_fetched_once(upstream, repo)
