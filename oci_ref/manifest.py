"""Manifest validation without HTTP: media type, JSON Schema, digests, embedded data.

Used by the manifest PUT responder (end-7) and by the offline CLI. By default every
MUST of the image-spec a registry can check, nothing more: lenient where the spec and
the conformance suites are (empty ``layers``, no ``mediaType``, unknown or null
fields, unregistered digest algorithms, layers never uploaded). ``strict`` adds the
SHOULDs (oci_ref.image_rules). schemas/README.md lists every rule and its test.
Structure lives in our JSON Schemas (``schemas/``): each rule-bearing subschema has a
``description`` (the rule) and an ``x-spec`` (the spec section), copied into the
error ``detail`` so the client learns what to fix; the RFC grammars are in code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oci_ref.errors import ErrorCode, ErrorEntry, RegistryError
from oci_ref.image_rules import code_failures, strict_failures
from oci_ref.image_rules import failure as _failure
from oci_ref.syntax import lone_surrogate, media_type_problem

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
MANIFEST_TYPES = frozenset({OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
OCI_TYPES = frozenset({OCI_MANIFEST, OCI_INDEX})

# Checklist §2.1.3: these Content-Types say nothing about the format; the body decides
# (containerd 1.2 pushed manifests as application/octet-stream).
GENERIC_TYPES = frozenset({'', 'application/octet-stream', 'application/json'})
# Docker schema 1 is deprecated. containers/image reacts to MANIFEST_INVALID by trying
# another format, so refusing it is safe.
DOCKER_SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+json'
SCHEMA1_TYPES = frozenset(
    {DOCKER_SCHEMA1, 'application/vnd.docker.distribution.manifest.v1+prettyjws'}
)
# image-spec layer.md §Non-Distributable Layers and manifest-v2-2.md (foreign layers):
# clients never push these, they fetch them from their ``urls``.
NONDISTRIBUTABLE_PREFIX = 'application/vnd.oci.image.layer.nondistributable.'
DOCKER_FOREIGN_LAYER = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'

SCHEMA_BASE = 'https://oci-ref.dev/schemas/'
_SCHEMA_FILES = {
    OCI_MANIFEST: 'image-manifest.schema.json',
    OCI_INDEX: 'image-index.schema.json',
    DOCKER_MANIFEST: 'docker-manifest-v2.schema.json',
    DOCKER_LIST: 'docker-manifest-list-v2.schema.json',
    OCI_CONFIG: 'image-config.schema.json',
}
_PUSH_SPEC = 'distribution-spec §Pushing Manifests'
# A 400 that lists thousands of failures helps nobody. The CLI (check) still gets all.
MAX_REPORTED = 50


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] | None = None
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Descriptor:
        """Build from a schema-valid descriptor object."""
        annotations = obj.get('annotations')
        return cls(
            media_type=obj['mediaType'],
            digest=obj['digest'],
            size=obj['size'],
            urls=tuple(obj.get('urls') or ()),
            annotations=dict(annotations) if annotations is not None else None,
            artifact_type=obj.get('artifactType') or None,
        )

    @property
    def is_nondistributable(self) -> bool:
        return (
            self.media_type.startswith(NONDISTRIBUTABLE_PREFIX)
            or self.media_type == DOCKER_FOREIGN_LAYER
        )


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    media_type: str  # the effective type, stored and served back as Content-Type
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]  # index children
    subject: Descriptor | None
    artifact_type: str | None  # what the referrers API reports (distribution-spec R62)
    annotations: dict[str, str] | None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def required_blobs(self) -> tuple[Descriptor, ...]:
        """The config and layers that must already be in the repository.

        Non-distributable layers are skipped, judged by media type only. The redesigned
        suite's "non-distributable-layers" image has two layers it never uploads
        (``…nondistributable.v1.tar+gzip`` and ``…nondistributable.v1.tar``, both also
        with ``urls``) next to an ordinary, uploaded gzip layer: the media type covers
        it. An ordinary layer with ``urls`` must still be present: ``urls`` is only a
        MAY-download hint (descriptor.md), and containerd and ggcr choose what to skip
        by media type, so they do push such layers.
        """
        if self.is_index or self.config is None:
            return ()
        return (self.config, *(d for d in self.layers if not d.is_nondistributable))


class _Reject(Exception):
    """A failure after which nothing else can be judged (bad JSON, unknown type)."""


def schema_dir() -> Path:
    """``oci_ref/_schemas`` in an installed wheel (the build maps the top-level
    ``schemas/`` there), else ``schemas/`` in the source checkout."""
    from importlib import resources  # with the schemas, on the first validation

    try:
        packaged = Path(str(resources.files('oci_ref').joinpath('_schemas')))
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, OSError, TypeError, ValueError):
        pass
    return Path(__file__).resolve().parent.parent / 'schemas'


@cache
def _validators() -> dict[str, Validator]:
    """Compile each schema once. Relative ``$ref``s resolve through a registry of
    our own files only: nothing is fetched from the network.

    jsonschema is imported here, not at module import: it is a good share of the
    server's start, and a registry answers /v2/ and pulls without it. The first
    validation pays for it, off the event loop (see :func:`schemas_loaded`)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    found = [
        json.loads(path.read_text(encoding='utf-8'))
        for path in sorted(schema_dir().glob('*.schema.json'))
    ]
    registry: Registry[Any] = Registry().with_resources(
        (doc['$id'], DRAFT202012.create_resource(doc)) for doc in found
    )
    return {
        media_type: Draft202012Validator(
            registry.contents(SCHEMA_BASE + name), registry=registry
        )
        for media_type, name in _SCHEMA_FILES.items()
    }


def schemas_loaded() -> bool:
    """Whether the validators are built; until then a validation reads the schema
    files and imports jsonschema, which the event loop must not wait for."""
    return _validators.cache_info().currsize > 0


def _no_constant(name: str) -> None:
    raise ValueError(f'{name} is not valid JSON')


def _decode(body: bytes) -> dict[str, Any]:
    rule = 'the request body is a manifest: a UTF-8 encoded JSON object'
    if not body.strip():
        raise _Reject(_failure(rule, '', _PUSH_SPEC, reason='the body is empty'))
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16 and UTF-32.
        # Decimal fractions: draft 2020-12 counts the float 2.0 as an integer, but Go
        # clients and registries refuse it for schemaVersion and size (int64), and a
        # Decimal is a number yet never an integer. Unknown fields are never re-encoded.
        from decimal import Decimal  # on the first manifest, not at start

        text = body.decode('utf-8')
        doc = json.loads(text, parse_float=Decimal, parse_constant=_no_constant,
                         object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError, ArithmeticError) as exc:
        # ArithmeticError: Decimal refuses exponents like 1e99999999999999999999.
        reason = str(exc)[:200] or type(exc).__name__
        raise _Reject(_failure(rule, '', _PUSH_SPEC, reason=reason)) from None
    if not isinstance(doc, dict):
        reason = f'the body is a JSON {type(doc).__name__}, not an object'
        raise _Reject(_failure(rule, '', _PUSH_SPEC, reason=reason))
    if (at := lone_surrogate(text, doc)) is not None:
        # Valid JSON syntax, but not Unicode text: it cannot be stored, indexed or
        # compared as a string (SQLite refuses it), and clients' parsers disagree.
        raise _Reject(_failure(
            'strings are Unicode text: an escaped lone surrogate such as \\ud800 is '
            'not allowed', at, 'RFC 8259 §8.2; I-JSON RFC 7493 §2.1 (image-spec '
            'considerations.md §JSON)', reason='a member name or string value holds '
            'an unpaired UTF-16 surrogate'))
    return doc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse duplicate keys: parsers disagree on which one wins (RFC 8259 §4), so
    the registry would validate one document and a client could read another."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f'duplicate key {key[:100]!r}: names must be unique')
            seen.add(key)
    return doc


def _unsupported(media_type: str, path: str, known: frozenset[str]) -> _Reject:
    if media_type in SCHEMA1_TYPES:
        reason = 'Docker schema 1 is deprecated and not accepted; push schema 2 or OCI'
    else:
        reason = f'{media_type[:100]!r} is not a manifest type this registry stores'
    rule = f'a manifest has a supported media type: {", ".join(sorted(known))}'
    extra = {'reason': reason, 'supported': sorted(known)}
    return _Reject(_failure(rule, path, _PUSH_SPEC, **extra))


def _effective_type(
    doc: dict[str, Any], content_type: str | None, known: frozenset[str]
) -> str:
    """Checklist §2.1: the Content-Type (parameters stripped, R44), else the body's
    ``mediaType``, else the shape of the body. If both are given, they must agree."""
    declared = (content_type or '').split(';', 1)[0].strip().lower()
    body_type = doc.get('mediaType')
    if isinstance(body_type, str) and (problem := media_type_problem(body_type)):
        rule = 'mediaType complies with RFC 6838, including the naming rules of its §4.2'
        spec = 'image-spec manifest.md, image-index.md §mediaType (RFC 6838 §4.2)'
        raise _Reject(_failure(rule, '/mediaType', spec, reason=problem))
    if declared not in GENERIC_TYPES:
        if declared not in known:
            raise _unsupported(declared, '', known)
        # image-spec: mediaType is optional (SHOULD), so absence is fine (legacy suite).
        if body_type is not None and body_type != declared:
            rule = 'the body mediaType, when present, equals the Content-Type header'
            reason = f'Content-Type {declared!r}, mediaType {str(body_type)[:100]!r}'
            raise _Reject(_failure(rule, '/mediaType', _PUSH_SPEC, reason=reason))
        return declared
    if body_type is not None:
        if not isinstance(body_type, str) or body_type not in known:
            raise _unsupported(str(body_type), '/mediaType', known)
        return body_type
    if doc.get('schemaVersion') == 1:
        raise _unsupported(DOCKER_SCHEMA1, '', known)
    if 'manifests' in doc:
        return OCI_INDEX
    if OCI_CONFIG in known and 'rootfs' in doc and 'layers' not in doc:
        return OCI_CONFIG
    if 'config' in doc:
        return OCI_MANIFEST
    rule = 'with no manifest Content-Type or mediaType, a body has config or manifests'
    raise _Reject(_failure(rule, '', _PUSH_SPEC, reason='the type cannot be told'))


def _pointer(parts: Any) -> str:
    return ''.join('/' + str(p).replace('~', '~0').replace('/', '~1') for p in parts)


def _schema_failures(validator: Validator, doc: dict[str, Any], limit: int | None = None
                     ) -> list[dict[str, Any]]:
    """One failure per failed rule; ``description`` and ``x-spec`` come from the
    failing subschema (every rule-bearing one has both; the root is a fallback).
    With ``limit``, stop after that many: a 4 MiB array of a million wrong items
    must not keep a worker busy producing a million errors nobody reads."""
    root: Any = validator.schema
    failures: dict[tuple[str, str], dict[str, Any]] = {}
    for error in validator.iter_errors(doc):
        if limit is not None and len(failures) >= limit:
            break
        schema = error.schema if isinstance(error.schema, dict) else {}
        rule = schema.get('description', root['description'])
        spec = schema.get('x-spec', root['x-spec'])
        path = _pointer(error.absolute_path)
        if error.validator == 'required':
            # One error per missing member; name the member itself in the path.
            names: Any = error.validator_value
            present: Any = error.instance
            for name in (n for n in names if n not in present):
                at, reason = f'{path}/{name}', f'{name!r} is missing'
                failures.setdefault((at, rule), _failure(rule, at, spec, reason=reason))
            continue
        if error.validator == 'not':
            reason = 'this member is not allowed in this type of document'
        else:
            reason = error.message[:200]
        failures.setdefault((path, rule), _failure(rule, path, spec, reason=reason))
    return list(failures.values())


def _validate(
    body: bytes, content_type: str | None, known: frozenset[str],
    limit: int | None = None, strict: bool = False,
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    doc = _decode(body)
    media_type = _effective_type(doc, content_type, known)
    failures = _schema_failures(_validators()[media_type], doc, limit)
    capped = limit is not None and len(failures) >= limit
    if media_type != OCI_CONFIG and not capped:
        # Past the cap nothing more is reported: a million bad layers must not each
        # be checked again in code.
        failures += code_failures(doc, media_type, {f['path'] for f in failures})
    if strict and not failures:
        # The SHOULDs are judged on documents that keep the MUSTs: they assume the
        # shape the schema guarantees.
        failures = strict_failures(doc, media_type)
    return media_type, doc, failures


def _build(doc: dict[str, Any], media_type: str) -> ParsedManifest:
    index = media_type in INDEX_TYPES
    oci = media_type in OCI_TYPES
    config = None if index else Descriptor.from_json(doc['config'])
    subject = doc.get('subject') if oci else None
    # R62: artifactType, else (image manifests) config.mediaType; empty means absent.
    artifact_type = (doc.get('artifactType') if oci else None) or None
    if artifact_type is None and config is not None:
        artifact_type = config.media_type or None
    annotations = doc.get('annotations') if oci else None
    return ParsedManifest(
        media_type=media_type,
        config=config,
        layers=() if index else tuple(map(Descriptor.from_json, doc['layers'])),
        manifests=tuple(map(Descriptor.from_json, doc['manifests'])) if index else (),
        subject=Descriptor.from_json(subject) if subject is not None else None,
        artifact_type=artifact_type,
        annotations=dict(annotations) if annotations is not None else None,
    )


def parse_manifest(body: bytes, content_type: str | None, *, strict: bool = False
                   ) -> ParsedManifest:
    """Validate a pushed manifest. On failure raise 400 MANIFEST_INVALID with one error
    entry per failed rule; on success return what the registry stores and indexes.
    ``strict`` adds the SHOULD rules (image_rules.strict_failures)."""
    try:
        media_type, doc, failures = _validate(body, content_type, MANIFEST_TYPES,
                                              limit=MAX_REPORTED + 1, strict=strict)
    except _Reject as reject:
        media_type, doc, failures = '', {}, [reject.args[0]]
    if not failures:
        return _build(doc, media_type)
    shown = failures[:MAX_REPORTED]
    if len(failures) > MAX_REPORTED:
        shown[-1] = {**shown[-1], 'omitted_failures': 'more failures not reported'}
    code = ErrorCode.MANIFEST_INVALID
    raise RegistryError.of(
        [ErrorEntry(code, f'{code.message}: {f["rule"]}', f) for f in shown]
    )


def check(body: bytes, content_type: str | None = None, *, strict: bool = False
          ) -> list[dict[str, Any]]:
    """For the CLI: every failed rule as ``{'rule', 'path', 'spec', 'reason', …}``, or
    ``[]`` when valid. Image configurations are checked as well when declared as, or
    recognised as, application/vnd.oci.image.config.v1+json."""
    try:
        return _validate(body, content_type, MANIFEST_TYPES | {OCI_CONFIG},
                         strict=strict)[2]
    except _Reject as reject:
        return [reject.args[0]]
