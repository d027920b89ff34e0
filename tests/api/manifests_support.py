"""Helpers shared by the manifest tests (test_manifests.py: pull, push and
delete; test_manifest_put.py: the manifest PUT rules of checklist §2)."""

from __future__ import annotations

import json
from typing import Any

from tests.support import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest,
    image_manifest,
    push_blob,
)

MIB = 1024 * 1024
DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json'
DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar.gzip'
DOCKER_FOREIGN = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'
OCI_NONDIST_GZIP = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip'
OCI_NONDIST_TAR = 'application/vnd.oci.image.layer.nondistributable.v1.tar'

# -- helpers -----------------------------------------------------------------------


def put(c: Any, name: str, reference: str, body: bytes,
        content_type: str | None = OCI_MANIFEST) -> Any:
    headers = {'Content-Type': content_type} if content_type is not None else {}
    return c.put(f'/v2/{name}/manifests/{reference}', content=body, headers=headers)


def put_ok(c: Any, name: str, reference: str, body: bytes,
           content_type: str | None = OCI_MANIFEST) -> Any:
    r = put(c, name, reference, body, content_type)
    assert r.status_code == 201, (r.status_code, r.content[:1000])
    return r


def blobs(c: Any, name: str, seed: str) -> tuple[bytes, bytes]:
    """Push a config and a layer; return their bytes."""
    config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'seed': seed,
                         'rootfs': {'type': 'layers', 'diff_ids': []}}).encode()
    layer = f'layer bytes {seed}'.encode()
    push_blob(c, name, config)
    push_blob(c, name, layer)
    return config, layer


def manifest_doc(config: bytes, layers: list[bytes], **extra: Any) -> dict[str, Any]:
    return json.loads(image_manifest(config, layers, **extra))


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def index_doc(children: list[dict[str, Any]], media_type: str = OCI_INDEX,
              **extra: Any) -> dict[str, Any]:
    return {'schemaVersion': 2, 'mediaType': media_type, 'manifests': children, **extra}


def manifest_descriptor(body: bytes, media_type: str = OCI_MANIFEST,
                        algorithm: str = 'sha256', **extra: Any) -> dict[str, Any]:
    return {'mediaType': media_type, 'digest': digest(body, algorithm),
            'size': len(body), **extra}


def docker_manifest(c: Any, name: str, seed: str) -> bytes:
    config, layer = blobs(c, name, seed)
    return dumps({
        'schemaVersion': 2,
        'mediaType': DOCKER_MANIFEST,
        'config': descriptor(DOCKER_CONFIG, config),
        'layers': [descriptor(DOCKER_LAYER, layer)],
    })


def error_codes(r: Any) -> list[str]:
    return [e['code'] for e in r.json()['errors']]


def padded_manifest(config: bytes, total: int) -> bytes:
    """An image manifest of exactly ``total`` bytes, padded with one big annotation
    (the new suite's "large-manifest" is ~3.9 MB of annotations)."""
    def build(pad: int) -> bytes:
        return image_manifest(config, [], annotations={'org.example.pad': 'x' * pad})
    body = build(0)
    body = build(total - len(body))
    assert len(body) == total
    return body
