"""The image-spec rules the JSON Schemas cannot say, and the strict (SHOULD) rules.

``code_failures`` holds MUSTs checked in code: the RFC grammars the spec borrows
(RFC 6838 media types, RFC 3986 URIs), registered digest encodings and embedded
``data``. ``strict_failures`` holds what ``--strict`` adds: the spec's SHOULDs and
the points where the image-spec's own schemas are stricter than its prose. Every
failure names its rule and spec section; strict ones carry ``"mode": "strict"``.
schemas/README.md lists every rule, where it is enforced and the test proving it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator
from typing import Any

from oci_ref.reference import ALGORITHMS, REGISTERED, descriptor_digest_problem
from oci_ref.syntax import (
    is_reverse_domain,
    media_type_problem,
    media_type_strict_problem,
    uri_problem,
    uri_scheme,
)

OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
EMPTY_JSON = 'application/vnd.oci.empty.v1+json'
DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
OCI_TYPES = frozenset({OCI_MANIFEST, OCI_INDEX})
# manifest.md §Guidance for an Empty Descriptor: the blob is `{}`.
EMPTY_DIGEST = 'sha256:' + hashlib.sha256(b'{}').hexdigest()

# The values Go documents for GOOS and GOARCH (image-index.md §platform, config.md).
GOOS = frozenset([
    'aix', 'android', 'darwin', 'dragonfly', 'freebsd', 'hurd', 'illumos', 'ios', 'js',
    'linux', 'nacl', 'netbsd', 'openbsd', 'plan9', 'solaris', 'wasip1', 'windows', 'zos'
])
GOARCH = frozenset([
    '386', 'amd64', 'amd64p32', 'arm', 'armbe', 'arm64', 'arm64be', 'loong64', 'mips',
    'mipsle', 'mips64', 'mips64le', 'mips64p32', 'mips64p32le', 'ppc', 'ppc64',
    'ppc64le', 'riscv', 'riscv64', 's390', 's390x', 'sparc', 'sparc64', 'wasm'
])
# I-JSON (RFC 7493 §2.2): integers beyond this lose precision in IEEE 754 doubles.
IJSON_MAX_INT = 2**53 - 1
_RFC3339 = re.compile(r'[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}'
                      r'(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})')

DESCRIPTOR = 'image-spec descriptor.md §Properties'
MANIFEST = 'image-spec manifest.md §Image Manifest Property Descriptions'
INDEX = 'image-spec image-index.md §Image Index Property Descriptions'
ANNOTATIONS = 'image-spec annotations.md §Rules'
RFC6838 = 'RFC 6838 §4.2'


def failure(rule: str, path: str, spec: str, **extra: Any) -> dict[str, Any]:
    return {'rule': rule, 'path': path, 'spec': spec, **extra}


def _strict(rule: str, path: str, spec: str, reason: str) -> dict[str, Any]:
    return failure(rule, path, spec, reason=reason, mode='strict')


def descriptor_slots(doc: dict[str, Any], media_type: str) -> Iterator[tuple[str, Any]]:
    """Every descriptor this document type defines; members that belong to another
    type are left to the schema's type-confusion rules."""
    key = 'manifests' if media_type in INDEX_TYPES else 'layers'
    if key == 'layers':
        yield '/config', doc.get('config')
    items: Any = doc.get(key)
    items = items if isinstance(items, list) else []
    yield from ((f'/{key}/{i}', d) for i, d in enumerate(items))
    # subject is an OCI field; in Docker formats it is an unknown field and is ignored.
    if media_type in OCI_TYPES:
        yield '/subject', doc.get('subject')


def _descriptors(doc: dict[str, Any], media_type: str
                 ) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, desc in descriptor_slots(doc, media_type):
        if isinstance(desc, dict):
            yield path, desc


def data_problem(data: str, digest: str, size: int) -> tuple[str, str] | None:
    """(rule, reason) when ``data`` is not the referenced content. descriptor.md: data
    is base64 (RFC 4648) of exactly the referenced bytes, so size and digest match.
    Digests of algorithms this registry cannot compute are left unverified."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return 'data is padded standard base64 (RFC 4648 §4)', 'not valid base64'
    if len(raw) != size:
        return 'decoded data is exactly size bytes', f'{len(raw)} bytes, size {size}'
    algorithm, _, encoded = digest.partition(':')
    if algorithm not in ALGORITHMS:
        return None
    actual = hashlib.new(algorithm, raw).hexdigest()
    if actual != encoded:
        return 'decoded data hashes to digest', f'data is {algorithm}:{actual}'
    return None


def _media_type(value: Any, path: str, spec: str, what: str) -> list[dict[str, Any]]:
    if isinstance(value, str) and (problem := media_type_problem(value)):
        rule = f'{what} complies with RFC 6838, including the naming rules of its §4.2'
        return [failure(rule, path, f'{spec} ({RFC6838})', reason=problem)]
    return []


def _artifact_type(value: Any, path: str, spec: str) -> list[dict[str, Any]]:
    # distribution-spec §Listing Referrers reads an empty artifactType as absent, so
    # the default does too; --strict refuses it (rule S-13).
    if value == '':
        return []
    return _media_type(value, path, spec, 'artifactType, when set,')


def code_failures(doc: dict[str, Any], media_type: str, seen: set[str]
                  ) -> list[dict[str, Any]]:
    """The MUSTs left to code. Paths the schema already reported are skipped, so
    one mistake gives one failure."""
    failures: list[dict[str, Any]] = []
    if media_type in OCI_TYPES and '/artifactType' not in seen:
        spec = f'{MANIFEST if media_type == OCI_MANIFEST else INDEX}: artifactType'
        failures += _artifact_type(doc.get('artifactType'), '/artifactType', spec)
    for path, desc in _descriptors(doc, media_type):
        if path in seen:
            continue
        if f'{path}/mediaType' not in seen:
            failures += _media_type(desc.get('mediaType'), f'{path}/mediaType',
                                    f'{DESCRIPTOR}: mediaType', 'mediaType')
        if f'{path}/artifactType' not in seen:
            failures += _artifact_type(desc.get('artifactType'), f'{path}/artifactType',
                                       f'{DESCRIPTOR}: artifactType')
        urls = desc.get('urls')
        if isinstance(urls, list) and not {f'{path}/urls', f'{path}/urls/0'} & seen:
            for i, url in enumerate(urls):
                if isinstance(url, str) and (problem := uri_problem(url)):
                    failures.append(failure('each urls entry conforms to RFC 3986',
                                            f'{path}/urls/{i}', f'{DESCRIPTOR}: urls',
                                            reason=problem))
        digest, size, data = desc.get('digest'), desc.get('size'), desc.get('data')
        if {f'{path}/digest', f'{path}/size'} & seen:
            continue
        if not isinstance(digest, str) or not isinstance(size, int):
            continue
        if problem := descriptor_digest_problem(digest):
            # The schema's pattern misses what Python's `$` lets through (a final
            # newline); fullmatch here catches it.
            rule = ('a digest is algorithm ":" encoded; registered algorithms use '
                    'their exact lower-case hex encoding')
            spec = 'image-spec descriptor.md §Digests'
            failures.append(failure(rule, f'{path}/digest', spec, reason=problem))
        elif isinstance(data, str) and (found := data_problem(data, digest, size)):
            spec = f'{DESCRIPTOR}: data'
            failures.append(failure(found[0], f'{path}/data', spec, reason=found[1]))
    return failures


# -- strict -------------------------------------------------------------------------


def strict_failures(doc: dict[str, Any], media_type: str) -> list[dict[str, Any]]:
    """What ``--strict`` adds to a document that passed the default rules."""
    if media_type == OCI_CONFIG:
        return _platform(doc, '', 'image-spec config.md §Properties')
    failures: list[dict[str, Any]] = []
    oci = media_type in OCI_TYPES
    spec = MANIFEST if media_type in (OCI_MANIFEST, DOCKER_MANIFEST) else INDEX
    if oci and 'mediaType' not in doc:
        failures.append(_strict('S-1: the mediaType property SHOULD be used', '/mediaType',
                                f'{spec}: mediaType', 'mediaType is missing'))
    if oci and doc.get('artifactType') == '':
        failures.append(_strict('S-13: artifactType, when set, is an RFC 6838 media type',
                                '/artifactType', f'{spec}: artifactType',
                                'artifactType is the empty string'))
    if media_type == OCI_MANIFEST:
        failures += _manifest_rules(doc)
    for path, desc in _descriptors(doc, media_type):
        failures += _descriptor_rules(desc, path, media_type, in_index=path.startswith(
            '/manifests/'))
    failures += _annotation_rules(doc, media_type)
    failures += _number_rules(doc)
    return failures


def _manifest_rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    failures = []
    layers = doc.get('layers') or []
    config = doc.get('config') or {}
    if not layers:
        failures.append(_strict(
            'S-2: for portability, layers SHOULD have at least one entry '
            '(an artifact without content uses the empty descriptor)',
            '/layers', f'{MANIFEST}: layers', 'layers is empty'))
    if config.get('mediaType') == EMPTY_JSON and not doc.get('artifactType'):
        failures.append(_strict(
            'S-3: artifactType MUST be set when config.mediaType is the empty value',
            '/artifactType', f'{MANIFEST}: artifactType',
            'config is the empty descriptor and artifactType is not set (enforced only '
            'in strict mode: artifacts made before image-spec v1.1 lack it)'))
    if config.get('mediaType') not in (OCI_CONFIG, None):
        for i, layer in enumerate(layers):
            if isinstance(layer, dict) and layer.get('size') == 0:
                failures.append(_strict(
                    'S-4: an artifact includes layers with a non-zero size',
                    f'/layers/{i}/size',
                    'image-spec manifest.md §Guidelines for Artifact Usage',
                    'size is 0; use the empty descriptor ({}, size 2) instead'))
    return failures


def _descriptor_rules(desc: dict[str, Any], path: str, media_type: str, *,
                      in_index: bool) -> list[dict[str, Any]]:
    failures = []
    for member in ('mediaType', 'artifactType'):
        value = desc.get(member)
        if isinstance(value, str) and (problem := media_type_strict_problem(value)):
            failures.append(_strict(
                f'S-11: {member} is a bare type/subtype, names of at most 64 characters',
                f'{path}/{member}', f'{DESCRIPTOR}: {member} ({RFC6838})', problem))
    digest = desc.get('digest')
    if isinstance(digest, str) and not digest.startswith('sha256:'):
        algorithm = digest.partition(':')[0]
        known = 'registered' if algorithm in REGISTERED else 'unregistered'
        failures.append(_strict(
            'S-9: compliant implementations SHOULD use SHA-256', f'{path}/digest',
            'image-spec descriptor.md §Registered algorithms',
            f'{algorithm!r} is {known}; sha256 is the portable choice'))
    for i, url in enumerate(desc.get('urls') or ()):
        if isinstance(url, str) and uri_scheme(url) not in ('http', 'https'):
            failures.append(_strict(
                'S-10: urls entries SHOULD use the http and https schemes',
                f'{path}/urls/{i}', f'{DESCRIPTOR}: urls',
                f'scheme {uri_scheme(url)[:20]!r}'))
    if desc.get('mediaType') == EMPTY_JSON and (
            desc.get('digest') != EMPTY_DIGEST or desc.get('size') != 2):
        failures.append(_strict(
            'S-5: the empty descriptor describes the blob {} (size 2, '
            f'digest {EMPTY_DIGEST})', path,
            'image-spec manifest.md §Guidance for an Empty Descriptor',
            f'digest {str(desc.get("digest"))[:80]}, size {desc.get("size")}'))
    if in_index and media_type == OCI_INDEX:
        child = desc.get('mediaType')
        if child == OCI_MANIFEST and 'platform' not in desc:
            failures.append(_strict(
                'S-6: descriptors pointing to an image manifest SHOULD include platform',
                f'{path}/platform', f'{DESCRIPTOR} (platform)', 'platform is missing'))
        if child not in (OCI_MANIFEST, OCI_INDEX):
            failures.append(_strict(
                'S-7: image indexes concerned with portability SHOULD list image '
                'manifests or image indexes', f'{path}/mediaType',
                f'{INDEX}: manifests', f'{str(child)[:100]!r}'))
    platform = desc.get('platform')
    if isinstance(platform, dict):
        failures += _platform(platform, f'{path}/platform',
                              'image-spec image-index.md §Image Index Property '
                              'Descriptions: platform')
    return failures


def _platform(platform: dict[str, Any], path: str, spec: str) -> list[dict[str, Any]]:
    failures = []
    for member, known, go in (('os', GOOS, 'GOOS'), ('architecture', GOARCH, 'GOARCH')):
        value = platform.get(member)
        if isinstance(value, str) and value not in known:
            failures.append(_strict(
                f'S-8: {member} SHOULD be a value Go lists for {go}',
                f'{path}/{member}', f'{spec}.{member}' if path else f'{spec}: {member}',
                f'{value[:50]!r} is not a {go} value'))
    return failures


_PREDEFINED = frozenset(
    [
        'created', 'authors', 'url', 'documentation', 'source', 'version', 'revision',
        'vendor', 'licenses', 'ref.name', 'title', 'description', 'base.digest',
        'base.name'
    ])


def _annotation_maps(doc: dict[str, Any], media_type: str
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(doc.get('annotations'), dict):
        yield '/annotations', doc['annotations']
    for path, desc in _descriptors(doc, media_type):
        if isinstance(desc.get('annotations'), dict):
            yield f'{path}/annotations', desc['annotations']


def _annotation_rules(doc: dict[str, Any], media_type: str) -> list[dict[str, Any]]:
    failures = []
    for base, notes in _annotation_maps(doc, media_type):
        for key, value in notes.items():
            at = base + '/' + key.replace('~', '~0').replace('/', '~1')
            if not is_reverse_domain(key):
                failures.append(_strict(
                    'S-12: annotation keys SHOULD use reverse domain notation '
                    '(com.example.myKey)', at, ANNOTATIONS, f'{key[:100]!r}'))
            elif key.startswith('org.opencontainers.image.'):
                failures += _predefined(key, value, at)
    return failures


def _predefined(key: str, value: Any, at: str) -> list[dict[str, Any]]:
    spec = 'image-spec annotations.md §Pre-Defined Annotation Keys'
    name = key.removeprefix('org.opencontainers.image.')
    if name not in _PREDEFINED:
        return [_strict('S-15: the org.opencontainers.image namespace holds only the '
                        'keys the image-spec defines', at, ANNOTATIONS,
                        f'{key[:100]!r} is not defined by the image-spec')]
    if not isinstance(value, str):
        return []
    if name == 'created' and not _RFC3339.fullmatch(value):
        return [_strict('S-15: org.opencontainers.image.created is an RFC 3339 date-time',
                        at, spec, f'{value[:60]!r}')]
    if name == 'base.digest' and descriptor_digest_problem(value):
        return [_strict('S-15: org.opencontainers.image.base.digest is a digest', at,
                        spec, f'{value[:100]!r}')]
    return []


def _number_rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """considerations.md §JSON (I-JSON, RFC 7493 §2.2): numbers SHOULD be limited
    to IEEE 754 double precision."""
    stack: list[tuple[str, Any]] = [('', doc)]
    while stack:
        pointer, node = stack.pop()
        number = isinstance(node, int) and not isinstance(node, bool)
        big = number and abs(node) > IJSON_MAX_INT
        if big:
            return [_strict('S-14: numbers SHOULD be limited to IEEE 754 double precision',
                            pointer, 'image-spec considerations.md §JSON (RFC 7493 §2.2)',
                            f'{node} is beyond 2^53-1')]
        if isinstance(node, dict):
            stack.extend((f'{pointer}/{k}', v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f'{pointer}/{i}', v) for i, v in enumerate(node))
    return []
