"""Build small images offline (no network), written from scratch for the tests:
OCI image layouts holding a multi-arch index of single-layer images (OCI or Docker
media types), single images, and `docker save` tarballs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any

OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip'
DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json'
DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar.gzip'
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ALL_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)

_TYPES = {
    'oci': (OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER),
    'docker': (DOCKER_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
}


def _blob(root: Path, data: bytes) -> dict[str, Any]:
    hexd = hashlib.sha256(data).hexdigest()
    (root / 'blobs' / 'sha256' / hexd).write_bytes(data)
    return {'digest': f'sha256:{hexd}', 'size': len(data)}


def layer_tar(files: dict[str, str | bytes]) -> tuple[bytes, bytes]:
    """A reproducible layer: (uncompressed tar, gzip of it)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode='w', format=tarfile.PAX_FORMAT) as tar:
        for name, text in files.items():
            payload = text.encode() if isinstance(text, str) else text
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(payload), 0o644, 0
            tar.addfile(info, io.BytesIO(payload))
    plain = raw.getvalue()
    return plain, gzip.compress(plain, mtime=0)


def _config(arch: str, plain_layer: bytes) -> bytes:
    return json.dumps({
        'architecture': arch, 'os': 'linux',
        'config': {'Cmd': ['/greeting.txt']},
        'rootfs': {'type': 'layers',
                   'diff_ids': [f'sha256:{hashlib.sha256(plain_layer).hexdigest()}']},
    }, sort_keys=True).encode()


def _init(root: Path) -> None:
    (root / 'blobs' / 'sha256').mkdir(parents=True, exist_ok=True)
    (root / 'oci-layout').write_text('{"imageLayoutVersion": "1.0.0"}')


def _write_index_json(root: Path, descs: list[dict[str, Any]]) -> None:
    path = root / 'index.json'
    old = json.loads(path.read_text())['manifests'] if path.exists() else []
    names = {d['annotations']['org.opencontainers.image.ref.name'] for d in descs}
    ref_name = 'org.opencontainers.image.ref.name'
    keep = [d for d in old if d.get('annotations', {}).get(ref_name) not in names]
    path.write_text(json.dumps({'schemaVersion': 2, 'manifests': keep + descs}))


def _image(root: Path, arch: str, seed: str, fmt: str) -> dict[str, Any]:
    _, manifest_type, config_type, layer_type = _TYPES[fmt]
    plain, gz = layer_tar({'greeting.txt': f'hello from {arch} {seed}\n'})
    doc = {
        'schemaVersion': 2, 'mediaType': manifest_type,
        'config': {'mediaType': config_type, **_blob(root, _config(arch, plain))},
        'layers': [{'mediaType': layer_type, **_blob(root, gz)}],
    }
    if fmt == 'docker':
        # Byte for byte what Go's distribution/schema2 writes (docker's own images):
        # descriptors ordered mediaType, size, digest; MarshalIndent with 3 spaces.
        # The docker CLI re-serialises manifests that way (`docker manifest`).
        for d in [doc['config'], *doc['layers']]:
            d['size'] = d.pop('size')
            d['digest'] = d.pop('digest')
        manifest = json.dumps(doc, indent=3).encode()
    else:
        manifest = json.dumps(doc).encode()
    return {'mediaType': manifest_type, **_blob(root, manifest),
            'platform': {'architecture': arch, 'os': 'linux'}}


def write_index_layout(root: Path, tag: str = 'v1', arches: tuple[str, ...] = (
        'amd64', 'arm64'), seed: str = '', fmt: str = 'oci') -> str:
    """Write an OCI layout whose index.json tags one multi-arch index (OCI, or a
    Docker manifest list with ``fmt='docker'``); return the index digest."""
    _init(root)
    index_type = _TYPES[fmt][0]
    children = [_image(root, arch, seed, fmt) for arch in arches]
    index = json.dumps({'schemaVersion': 2, 'mediaType': index_type,
                        'manifests': children}).encode()
    desc = {'mediaType': index_type, **_blob(root, index),
            'annotations': {'org.opencontainers.image.ref.name': tag}}
    _write_index_json(root, [desc])
    return str(desc['digest'])


def write_image_layout(root: Path, tag: str = 'v1', arch: str = 'amd64', seed: str = '',
                       fmt: str = 'oci') -> str:
    """Write an OCI layout tagging one single-platform image; return its digest."""
    _init(root)
    desc = _image(root, arch, seed, fmt)
    desc.pop('platform')
    desc['annotations'] = {'org.opencontainers.image.ref.name': tag}
    _write_index_json(root, [desc])
    return str(desc['digest'])


def write_docker_archive(path: Path, repo_tag: str, seed: str = '',
                         random_bytes: int = 0) -> str:
    """A `docker save` tarball (manifest.json + config + layer.tar) of one amd64
    image, its layer holding a greeting and ``random_bytes`` of incompressible data
    (so that clients really stream a big blob); return the config digest (the image
    ID)."""
    files: dict[str, str | bytes] = {'greeting.txt': f'hello from a tarball {seed}\n'}
    if random_bytes:
        files['random.bin'] = random.Random(seed).randbytes(random_bytes)
    plain, _ = layer_tar(files)
    config = _config('amd64', plain)
    config_hex = hashlib.sha256(config).hexdigest()
    layer_hex = hashlib.sha256(plain).hexdigest()
    members = {
        f'{config_hex}.json': config,
        f'{layer_hex}/layer.tar': plain,
        'manifest.json': json.dumps([{'Config': f'{config_hex}.json',
                                      'RepoTags': [repo_tag],
                                      'Layers': [f'{layer_hex}/layer.tar']}]).encode(),
    }
    with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return f'sha256:{config_hex}'
