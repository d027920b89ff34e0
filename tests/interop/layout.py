"""Build small OCI image layouts offline (no network): a multi-arch index of
single-layer images, written from scratch for the tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'


def _blob(root: Path, data: bytes) -> dict[str, Any]:
    hexd = hashlib.sha256(data).hexdigest()
    (root / 'blobs' / 'sha256' / hexd).write_bytes(data)
    return {'digest': f'sha256:{hexd}', 'size': len(data)}


def _layer(text: str) -> tuple[bytes, bytes]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode='w', format=tarfile.PAX_FORMAT) as tar:
        payload = text.encode()
        info = tarfile.TarInfo('greeting.txt')
        info.size, info.mode, info.mtime = len(payload), 0o644, 0
        tar.addfile(info, io.BytesIO(payload))
    plain = raw.getvalue()
    return plain, gzip.compress(plain, mtime=0)


def write_index_layout(root: Path, tag: str = 'v1', arches: tuple[str, ...] = (
        'amd64', 'arm64'), seed: str = '') -> str:
    """Write an OCI layout whose index.json tags one multi-arch index; return the
    index digest."""
    (root / 'blobs' / 'sha256').mkdir(parents=True, exist_ok=True)
    (root / 'oci-layout').write_text('{"imageLayoutVersion": "1.0.0"}')
    children = []
    for arch in arches:
        plain, gz = _layer(f'hello from {arch} {seed}\n')
        layer = {'mediaType': 'application/vnd.oci.image.layer.v1.tar+gzip',
                 **_blob(root, gz)}
        config = json.dumps({
            'architecture': arch, 'os': 'linux',
            'rootfs': {'type': 'layers',
                       'diff_ids': [f'sha256:{hashlib.sha256(plain).hexdigest()}']},
        }, sort_keys=True).encode()
        manifest = json.dumps({
            'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
            'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',
                       **_blob(root, config)},
            'layers': [layer],
        }).encode()
        children.append({'mediaType': OCI_MANIFEST, **_blob(root, manifest),
                         'platform': {'architecture': arch, 'os': 'linux'}})
    index = json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX,
                        'manifests': children}).encode()
    desc = {'mediaType': OCI_INDEX, **_blob(root, index),
            'annotations': {'org.opencontainers.image.ref.name': tag}}
    (root / 'index.json').write_text(json.dumps({'schemaVersion': 2, 'manifests': [desc]}))
    return str(desc['digest'])
