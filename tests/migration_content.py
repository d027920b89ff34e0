"""A registry's worth of content for the ``oci-ref migrate`` tests, pushed through
the API (in-process or a real server), and a view of a registry read back through
the API, to compare source and target byte for byte.

The sample: a multi-platform image (an index over two image manifests, two tags), a
referrer (an SBOM-like artifact whose subject is the index), an untagged manifest, a
layer shared by two repositories, a blob linked where no manifest uses it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from tests.support import (
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest,
    image_manifest,
    push_blob,
)

SBOM = 'application/vnd.example.sbom.v1'


@dataclass
class Sample:
    """What was pushed: where to look when reading it back."""

    blobs: dict[str, list[str]] = field(default_factory=dict)      # repo -> digests
    manifests: dict[str, list[str]] = field(default_factory=dict)  # repo -> digests
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # repo -> tag -> digest
    subjects: dict[str, list[str]] = field(default_factory=dict)   # repo -> subjects

    def blob(self, c: Any, repo: str, data: bytes) -> str:
        d = push_blob(c, repo, data)
        if d not in self.blobs.setdefault(repo, []):
            self.blobs[repo].append(d)
        return d

    def manifest(self, c: Any, repo: str, ref: str, body: bytes, media_type: str
                 ) -> str:
        r = c.put(f'/v2/{repo}/manifests/{ref}', content=body,
                  headers={'Content-Type': media_type})
        assert r.status_code == 201, r.content
        d = digest(body)
        if d not in self.manifests.setdefault(repo, []):
            self.manifests[repo].append(d)
        if not ref.startswith('sha256:'):
            self.tags.setdefault(repo, {})[ref] = d
        return d

    def image(self, c: Any, repo: str, ref: str, seed: str, layer: bytes | None = None
              ) -> bytes:
        config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'seed': seed,
                             'rootfs': {'type': 'layers', 'diff_ids': []}}).encode()
        layer = layer if layer is not None else f'layer of {seed}'.encode()
        self.blob(c, repo, config)
        self.blob(c, repo, layer)
        body = image_manifest(config, [layer])
        self.manifest(c, repo, ref, body, OCI_MANIFEST)
        return body


def push_sample(c: Any, *, big: int = 256 * 1024) -> Sample:
    """Push the sample through client ``c``; ``big``: the size of the one large layer."""
    s = Sample()
    amd = s.image(c, 'app/web', 'amd64', 'amd64', layer=os.urandom(big))
    arm = s.image(c, 'app/web', 'arm64', 'arm64')
    index = json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX, 'manifests': [
        descriptor(OCI_MANIFEST, amd, platform={'architecture': 'amd64', 'os': 'linux'}),
        descriptor(OCI_MANIFEST, arm, platform={'architecture': 'arm64', 'os': 'linux'}),
    ]}).encode()
    s.manifest(c, 'app/web', 'v1', index, OCI_INDEX)
    index_digest = s.manifest(c, 'app/web', 'latest', index, OCI_INDEX)
    # A referrer of the index: what `oras attach` / `cosign attach` push.
    s.blob(c, 'app/web', b'{}')
    sbom = f'sbom of {index_digest}'.encode()
    s.blob(c, 'app/web', sbom)
    body = json.dumps({
        'schemaVersion': 2, 'mediaType': OCI_MANIFEST, 'artifactType': SBOM,
        'config': descriptor(EMPTY_JSON, b'{}'),
        'layers': [descriptor('application/json', sbom)],
        'subject': descriptor(OCI_INDEX, index),
        'annotations': {'org.example.kind': 'sbom'},
    }).encode()
    s.manifest(c, 'app/web', digest(body), body, OCI_MANIFEST)
    s.subjects.setdefault('app/web', []).append(index_digest)
    # An untagged image: kept by a registry until an untagged GC.
    untagged = image_manifest(b'{"untagged": true}', [b'untagged layer'])
    s.blob(c, 'app/web', b'{"untagged": true}')
    s.blob(c, 'app/web', b'untagged layer')
    s.manifest(c, 'app/web', digest(untagged), untagged, OCI_MANIFEST)
    # The same layer in a second repository (one blob, two links).
    s.image(c, 'lib/db', '1.0', 'db', layer=b'layer of arm64')
    s.blob(c, 'lib/only-blobs', b'a blob no manifest uses')
    return s


def view(c: Any, sample: Sample) -> dict[str, Any]:
    """The registry as clients see it, for what ``sample`` pushed: every blob's and
    manifest's bytes and type, every tag list, every referrers list, the catalog."""
    out: dict[str, Any] = {}
    r = c.get('/v2/_catalog')
    assert r.status_code == 200, r.content
    out['catalog'] = r.json()['repositories']
    for repo, digests in sample.blobs.items():
        for d in digests:
            r = c.get(f'/v2/{repo}/blobs/{d}')
            out[f'blob {repo} {d}'] = (r.status_code, digest(r.content)
                                       if r.status_code == 200 else None)
    for repo, digests in sample.manifests.items():
        for d in digests:
            r = c.get(f'/v2/{repo}/manifests/{d}', headers={'Accept': '*/*'})
            out[f'manifest {repo} {d}'] = (r.status_code, r.headers.get('content-type'),
                                           r.content)
        r = c.get(f'/v2/{repo}/tags/list')
        out[f'tags {repo}'] = (r.status_code, r.json())
        for tag in sample.tags.get(repo, {}):
            r = c.get(f'/v2/{repo}/manifests/{tag}', headers={'Accept': '*/*'})
            out[f'tag {repo}:{tag}'] = (r.status_code,
                                        r.headers.get('docker-content-digest'))
    for repo, subjects in sample.subjects.items():
        for d in subjects:
            r = c.get(f'/v2/{repo}/referrers/{d}')
            out[f'referrers {repo} {d}'] = (r.status_code, r.json())
    return out
