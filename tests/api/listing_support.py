"""Helpers shared by the listing tests (test_listing.py: /v2/, tags, catalog,
routing, the error envelope; test_referrers.py: the referrers API)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.support import (
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    InProcess,
    descriptor,
    digest,
    push_blob,
    push_image,
)

LINK_RE = re.compile(r'^<(?P<url>[^>]+)>;\s*rel="next"$')
TYPE_A = 'application/vnd.nhl.peanut.butter.bagel'
TYPE_B = 'application/vnd.nba.strawberry.jam.croissant'
TYPE_INDEX = 'application/vnd.food.stand'
# Values of n no client may send: never a server error (tags and referrers).
INVALID_N = ['-1', 'abc', '1.5', '0x10', '%203', '%2B3', '%C2%B2', '%EF%BC%93']
ANNOTATION = 'org.opencontainers.conformance.test'


# -- helpers -----------------------------------------------------------------------


def app_client(tmp_path: Path, **settings: Any) -> InProcess:
    return InProcess(create_app(Config(root=tmp_path / 'data', **settings)))


def next_link(r: Any) -> str | None:
    """The path+query of an RFC 5988 ``Link: <…>; rel="next"``, or None."""
    value = r.headers.get('link')
    if value is None:
        return None
    m = LINK_RE.match(value)
    assert m, f'Link is not RFC 5988 rel="next": {value!r}'
    parts = urlsplit(m['url'])
    assert parts.path.startswith('/v2/'), value
    return f'{parts.path}?{parts.query}' if parts.query else parts.path


def follow(c: Any, url: str, key: str, limit: int = 100) -> tuple[list[Any], int]:
    """Follow Link headers from ``url``; return every item of ``key`` and the pages."""
    items: list[Any] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        r = c.get(next_url)
        assert r.status_code == 200, (next_url, r.content)
        items += r.json()[key]
        pages += 1
        assert pages <= limit
        next_url = next_link(r)
    return items, pages


def tag_all(c: Any, name: str, tags: list[str]) -> str:
    """One manifest carrying every tag in ``tags``; returns its digest."""
    d, body = push_image(c, name, tags[0])
    for start in range(1, len(tags), 50):
        query = '&'.join(f'tag={t}' for t in tags[start:start + 50])
        r = c.put(f'/v2/{name}/manifests/{d}?{query}', content=body,
                  headers={'Content-Type': OCI_MANIFEST})
        assert r.status_code == 201, r.content
    return d


def subject_of(c: Any, name: str, reference: str = 'subject') -> dict[str, Any]:
    d, body = push_image(c, name, reference, seed=f'subject-{reference}')
    return {'mediaType': OCI_MANIFEST, 'digest': d, 'size': len(body)}


def push_artifact(c: Any, name: str, subject: dict[str, Any] | None, *,
                  artifact_type: str | None = None, config_type: str = EMPTY_JSON,
                  config: bytes = b'{}', annotations: dict[str, str] | None = None,
                  layer: bytes = b'artifact payload', tag: str | None = None
                  ) -> tuple[str, bytes]:
    push_blob(c, name, config)
    push_blob(c, name, layer)
    doc: dict[str, Any] = {'schemaVersion': 2, 'mediaType': OCI_MANIFEST}
    if artifact_type is not None:
        doc['artifactType'] = artifact_type
    doc['config'] = descriptor(config_type, config)
    doc['layers'] = [descriptor('application/octet-stream', layer)]
    if subject is not None:
        doc['subject'] = subject
    if annotations is not None:
        doc['annotations'] = annotations
    body = json.dumps(doc).encode()
    ref = tag or digest(body)
    r = c.put(f'/v2/{name}/manifests/{ref}', content=body,
              headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201, r.content
    return digest(body), body


def push_index(c: Any, name: str, children: list[tuple[str, bytes]],
               subject: dict[str, Any] | None, **extra: Any) -> tuple[str, bytes]:
    doc: dict[str, Any] = {
        'schemaVersion': 2, 'mediaType': OCI_INDEX,
        'manifests': [{'mediaType': OCI_MANIFEST, 'digest': d, 'size': len(b)}
                      for d, b in children],
        **extra,
    }
    if subject is not None:
        doc['subject'] = subject
    body = json.dumps(doc).encode()
    r = c.put(f'/v2/{name}/manifests/{digest(body)}', content=body,
              headers={'Content-Type': OCI_INDEX})
    assert r.status_code == 201, r.content
    return digest(body), body


def referrers(c: Any, name: str, subject_digest: str, query: str = '') -> Any:
    r = c.get(f'/v2/{name}/referrers/{subject_digest}{query}')
    assert r.status_code == 200, r.content
    assert r.headers['content-type'] == OCI_INDEX
    body = r.json()
    assert body['schemaVersion'] == 2
    assert body['mediaType'] == OCI_INDEX
    assert isinstance(body['manifests'], list)
    return r


def by_digest(r: Any) -> dict[str, dict[str, Any]]:
    entries = r.json()['manifests']
    found = {e['digest']: e for e in entries}
    assert len(found) == len(entries), 'duplicate referrers'
    return found
