"""cosign, offline and key-based: a key pair made at test time, no Rekor, no Fulcio,
no TUF. Signatures stored as tags (``sha256-<hex>.sig``) and, with
``--registry-referrers-mode=oci-1-1``, as referrers of the image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.interop.conftest import find_client
from tests.interop.layout import OCI_MANIFEST, write_image_layout
from tests.interop.util import (
    Registry,
    host,
    log_mark,
    log_since,
    push_layout,
    referrers,
    resolve,
    run,
    served,
    tags,
)

pytestmark = [pytest.mark.interop, pytest.mark.cosign]

REGISTRY_FLAGS = ('--allow-insecure-registry', '--allow-http-registry')
SIG_ARTIFACT = 'application/vnd.dev.cosign.artifact.sig.v1+json'


def cosign_env(workdir: Path) -> dict[str, str]:
    home = workdir / 'home'
    home.mkdir(exist_ok=True)
    # COSIGN_EXPERIMENTAL enables --registry-referrers-mode; TUF_ROOT and HOME keep
    # cosign's caches in the test's directory.
    return {'COSIGN_PASSWORD': 'interop', 'COSIGN_EXPERIMENTAL': '1',
            'TUF_ROOT': str(workdir / 'tuf'), 'HOME': str(home),
            'DOCKER_CONFIG': str(home / '.docker'), 'SIGSTORE_NO_CACHE': '1'}


def cosign(registry: Registry, workdir: Path, *args: str,
           check: bool = True) -> tuple[int, str]:
    done = run([find_client('cosign'), *args], registry=registry, cwd=workdir,
               env=cosign_env(workdir), timeout=120, check=check)
    return done.returncode, done.stdout + done.stderr


def key_pair(registry: Registry, workdir: Path, name: str) -> Path:
    keydir = workdir / name
    keydir.mkdir()
    run([find_client('cosign'), 'generate-key-pair'], cwd=keydir, env=cosign_env(workdir))
    assert (keydir / 'cosign.key').is_file() and (keydir / 'cosign.pub').is_file()
    return keydir


def seed(registry: Registry, workdir: Path, repo: str) -> str:
    write_image_layout(workdir / 'src', 'v1', seed=f'cosign {repo}')
    return push_layout(registry, workdir / 'src', repo, 'v1')


def sign(registry: Registry, workdir: Path, keydir: Path, image: str, *extra: str) -> None:
    cosign(registry, workdir, 'sign', '--key', str(keydir / 'cosign.key'),
           '--tlog-upload=false', '-y', *REGISTRY_FLAGS, *extra, image)


def verify(registry: Registry, workdir: Path, keydir: Path, image: str,
           *extra: str, check: bool = True) -> tuple[int, str]:
    return cosign(registry, workdir, 'verify', '--key', str(keydir / 'cosign.pub'),
                  '--insecure-ignore-tlog', '--offline', *REGISTRY_FLAGS, *extra, image,
                  check=check)


def test_cosign_sign_verify_tag_signatures(registry: Registry, workdir: Path,
                                           repo: str) -> None:
    """sign + verify, tag-based signatures (sha256-<hex>.sig)"""
    digest = seed(registry, workdir, repo)
    keys = key_pair(registry, workdir, 'keys')
    image = f'{host(registry)}/{repo}@{digest}'
    sign(registry, workdir, keys, image)

    sig_tag = f'sha256-{digest[7:]}.sig'
    assert tags(registry, repo) == sorted([sig_tag, 'v1'])
    _, out = verify(registry, workdir, keys, image)
    payload = json.loads(next(line for line in out.splitlines() if line.startswith('[')))
    assert payload[0]['critical']['image']['docker-manifest-digest'] == digest
    signature = served(registry, repo, resolve(registry, repo, sig_tag), OCI_MANIFEST)
    assert signature['layers'][0]['mediaType'] == (
        'application/vnd.dev.cosign.simplesigning.v1+json')

    # A different key does not verify: the check is real.
    other = key_pair(registry, workdir, 'other')
    code, out = verify(registry, workdir, other, image, check=False)
    assert code != 0, out


def test_cosign_sign_verify_oci11_referrers(registry: Registry, workdir: Path,
                                            repo: str) -> None:
    """sign + verify with --registry-referrers-mode=oci-1-1 (referrers API)"""
    digest = seed(registry, workdir, repo)
    keys = key_pair(registry, workdir, 'keys')
    image = f'{host(registry)}/{repo}@{digest}'
    mark = log_mark(registry)
    sign(registry, workdir, keys, image, '--registry-referrers-mode=oci-1-1')

    # Stored as a referrer of the image, not as a .sig tag.
    assert tags(registry, repo) == ['v1'], (
        'cosign fell back to a .sig tag: the registry has no referrers API')
    found = referrers(registry, repo, digest)
    assert [m['artifactType'] for m in found] == [SIG_ARTIFACT]
    signature = served(registry, repo, found[0]['digest'], OCI_MANIFEST)
    assert signature['subject']['digest'] == digest

    _, out = verify(registry, workdir, keys, image, '--experimental-oci11')
    assert 'signatures were verified against the specified public key' in out
    assert f'/v2/{repo}/referrers/' in log_since(registry, mark)
    other = key_pair(registry, workdir, 'other')
    code, out = verify(registry, workdir, other, image, '--experimental-oci11', check=False)
    assert code != 0, out
