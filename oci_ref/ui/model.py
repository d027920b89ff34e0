"""Every read (and the one write, delete) the web view makes, in one place.

The resources and templates only see the plain dataclasses below, never the
registry or the metadata store: when the store interface changes (async storage
engines), this module is the one that changes. Methods are ``async`` already, so
the callers stay as they are.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.manifest import INDEX_TYPES, OCI_CONFIG, check
from oci_ref.reference import Digest, is_digest_reference, is_valid_tag
from oci_ref.registry import Registry
from oci_ref.storage.interfaces import TagDetail

DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json'
IMAGE_CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})
# Configs larger than this are not read for their platform (a real one is a few KiB).
CONFIG_READ_MAX = 256 * 1024
# Validating a big manifest is CPU work: off the event loop past this size.
CHECK_INLINE_MAX = 64 * 1024
# Nested indexes are followed this deep in the descriptor tree.
TREE_DEPTH = 3


@dataclass(frozen=True, slots=True)
class RepositorySummary:
    name: str
    tags: int
    size: int
    cached_from: str | None = None  # the upstream a pull-through cache holds it for


@dataclass(frozen=True, slots=True)
class RepositoryPage:
    items: list[RepositorySummary]
    next_last: str | None  # marker of the next page, None on the last one


@dataclass(frozen=True, slots=True)
class TagRow:
    tag: str
    digest: str
    media_type: str
    kind: str  # 'index', 'image' or 'artifact'
    artifact_type: str | None
    platforms: list[str]
    size: int  # total compressed size: the manifest's blobs (an index: its children's)
    pushed_at: float
    validated_at: float | None = None  # a cached tag: last checked at its upstream


@dataclass(frozen=True, slots=True)
class TagPage:
    rows: list[TagRow]
    total: int
    page: int
    pages: int


@dataclass(slots=True)
class Node:
    """One descriptor of the tree: an index's manifests, a manifest's config and
    layers; ``children`` are filled for manifests present in the repository."""

    role: str  # 'manifest', 'config', 'layer', 'subject'
    media_type: str
    digest: str
    size: int
    platform: str = ''
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    present: bool = False  # a manifest stored in this repository (linkable)
    children: list[Node] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Remark:
    """One failed rule of the validator, with the spec text behind it."""

    rule: str
    spec: str
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReferrerEntry:
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    annotations: dict[str, str]
    via: str  # 'subject' (referrers API) or 'tag <name>' (the tag-schema fallback)


@dataclass(frozen=True, slots=True)
class ManifestView:
    name: str
    reference: str
    digest: str
    media_type: str
    size: int
    raw: str  # the stored bytes, pretty-printed when they are JSON
    remarks: list[Remark]
    tags: list[tuple[str, float]]
    pushed_at: float | None
    artifact_type: str | None
    annotations: dict[str, str]
    total_size: int
    platform: str  # of an image, from its config ('' for indexes and artifacts)
    tree: list[Node]
    subject: Node | None
    referrers: list[ReferrerEntry]


@dataclass(frozen=True, slots=True)
class GraphNode:
    digest: str
    label: str  # artifact type, else media type
    via: str
    depth: int
    present: bool


@dataclass(frozen=True, slots=True)
class Graph:
    root: str
    nodes: list[GraphNode]
    edges: list[tuple[str, str]]  # (referrer, subject)
    truncated: bool


class Model:
    """The web view's window on the registry."""

    def __init__(self, registry: Registry,
                 cached_by: Callable[[str], str | None] | None = None):
        self.registry = registry
        self._cached_by = cached_by

    @property
    def caching(self) -> bool:
        """Whether this registry is also a pull-through cache (upstreams configured)."""
        return self._cached_by is not None

    def cached_from(self, name: str) -> str | None:
        """The upstream whose pull-through cache holds ``name`` (issue 13), if any."""
        return self._cached_by(name) if self._cached_by is not None else None

    # -- switches --------------------------------------------------------------------

    def deletes_enabled(self, reference: str, name: str = '') -> bool:
        policy = self.registry.policy
        if policy.read_only or self.cached_from(name) is not None:
            # A cache's content is the upstream's: the API refuses writes there
            # (405), and eviction, not a delete, frees its space.
            return False
        return (policy.delete_manifests if is_digest_reference(reference)
                else policy.delete_tags)

    # -- repositories ------------------------------------------------------------------

    async def repositories(self, readable: Callable[[str], bool], query: str,
                           last: str | None, n: int) -> RepositoryPage:
        """A page of the repositories ``readable`` admits whose name holds ``query``."""
        q = query.strip().lower()
        page = await self.registry.catalog(last, n, lambda r: q in r and readable(r))
        stats = await self.registry.meta.repository_stats(page.items)
        items = [RepositorySummary(r, *stats[r], self.cached_from(r)) for r in page.items]
        return RepositoryPage(items, page.items[-1] if page.more else None)

    async def repository_exists(self, name: str) -> bool:
        return await self.registry.meta.repo_exists(name)

    # -- tags ----------------------------------------------------------------------------

    async def tags(self, name: str, *, by_pushed: bool, descending: bool, page: int,
                   per_page: int) -> TagPage:
        meta = self.registry.meta
        total = await meta.tag_count(name)
        pages = max(1, -(-total // per_page))
        page = min(max(page, 1), pages)
        details = await meta.tag_details(name, by_pushed=by_pushed,
                                         descending=descending,
                                         offset=(page - 1) * per_page, limit=per_page)
        resolver = _Resolver(self.registry, name)
        docs = [_json(d.content) for d in details]
        # Every image config of the page read in one trip to a worker thread.
        await resolver.read_platforms([doc.get('config') for doc in docs])
        validated: dict[str, float] = {}
        if self.cached_from(name) is not None and details:
            validated = await meta.cache_tags_validated(name, [d.tag for d in details])
        rows = [await resolver.row(d, doc, validated.get(d.tag))
                for d, doc in zip(details, docs, strict=True)]
        return TagPage(rows, total, page, pages)

    # -- one manifest ----------------------------------------------------------------

    async def manifest(self, name: str, reference: str) -> ManifestView:
        """Raises RegistryError (404) for an unknown name or reference."""
        record = await self.registry.get_manifest(name, reference)
        doc = _json(record.content)
        if len(record.content) > CHECK_INLINE_MAX:
            failures = await asyncio.to_thread(check, record.content, record.media_type)
        else:
            failures = check(record.content, record.media_type)
        remarks = [Remark(str(f.get('rule', '')), str(f.get('spec', '')),
                          str(f.get('path', '')), str(f.get('reason', '')))
                   for f in failures]
        resolver = _Resolver(self.registry, name)
        tree = await resolver.tree(doc, record.media_type, TREE_DEPTH)
        subject = None
        if isinstance(doc.get('subject'), dict):
            subject = await resolver.node('subject', doc['subject'])
        meta = self.registry.meta
        tags = await meta.tags_of(name, record.digest)
        pushed_at = await meta.manifest_pushed_at(name, record.digest)
        return ManifestView(
            name=name, reference=reference, digest=record.digest,
            media_type=record.media_type, size=record.size, raw=_pretty(record.content),
            remarks=remarks, tags=tags, pushed_at=pushed_at,
            artifact_type=_artifact_type(doc),
            annotations=_annotations(doc.get('annotations')),
            total_size=await resolver.total(record.digest, doc, record.media_type),
            platform=await resolver.config_platform(doc['config'])
            if isinstance(doc.get('config'), dict) else '',
            tree=tree, subject=subject,
            referrers=await self.referrers(name, record.digest),
        )

    # -- referrers -------------------------------------------------------------------

    async def referrers(self, name: str, digest: str, limit: int = 200
                        ) -> list[ReferrerEntry]:
        """What refers to ``digest``: through ``subject`` (the referrers API) and
        through the tag schema (``<alg>-<hex>`` tags, distribution-spec §Referrers Tag
        Schema; cosign's ``.sig``/``.att``/``.sbom`` tags follow the same naming)."""
        found: dict[str, ReferrerEntry] = {}
        for r in (await self.registry.referrers(name, digest, None, None, limit)).items:
            found[r.digest] = ReferrerEntry(r.digest, r.media_type, r.artifact_type,
                                            r.size, _annotations(r.annotations), 'subject')
        d = Digest.parse(digest)
        meta = self.registry.meta
        for tag in await meta.tags_with_prefix(name, f'{d.algorithm}-{d.encoded}', limit):
            record = await meta.get_tagged_manifest(name, tag)
            if record is None:
                continue
            doc = _json(record.content)
            if tag == f'{d.algorithm}-{d.encoded}' and record.media_type in INDEX_TYPES:
                # The fallback index lists the referrers as its manifests.
                for desc in _descriptors(doc.get('manifests')):
                    found.setdefault(desc['digest'], ReferrerEntry(
                        desc['digest'], str(desc.get('mediaType', '')),
                        desc.get('artifactType') or None, int(desc.get('size', 0)),
                        _annotations(desc.get('annotations')), f'tag {tag}'))
            else:
                found.setdefault(record.digest, ReferrerEntry(
                    record.digest, record.media_type, _artifact_type(doc), record.size,
                    _annotations(doc.get('annotations')), f'tag {tag}'))
            if len(found) >= limit:
                break
        return sorted(found.values(), key=lambda e: (e.artifact_type or '', e.digest))

    async def graph(self, name: str, digest: str, depth: int = 3, limit: int = 60
                    ) -> Graph:
        """The referrers of ``digest``, their referrers, … breadth first."""
        root = await self.registry.get_manifest(name, digest)
        nodes = [GraphNode(root.digest, _artifact_type(_json(root.content))
                           or root.media_type, '', 0, True)]
        seen = {root.digest}
        edges: list[tuple[str, str]] = []
        frontier = [root.digest]
        truncated = False
        for level in range(1, depth + 1):
            following = []
            for subject in frontier:
                for r in await self.referrers(name, subject):
                    edges.append((r.digest, subject))
                    if r.digest in seen:
                        continue
                    if len(nodes) >= limit:
                        truncated = True
                        continue
                    seen.add(r.digest)
                    nodes.append(GraphNode(
                        r.digest, r.artifact_type or r.media_type, r.via, level,
                        await self.registry.meta.get_manifest(name, r.digest) is not None))
                    following.append(r.digest)
            frontier = following
        kept = {n.digest for n in nodes}
        return Graph(root.digest, nodes, [e for e in edges if e[0] in kept], truncated)

    # -- the one write ----------------------------------------------------------------

    async def delete(self, name: str, reference: str) -> None:
        """end-9 semantics: a tag removes the tag, a digest the manifest and its tags."""
        if not (is_digest_reference(reference) or is_valid_tag(reference)):
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN,
                                detail={'reference': reference[:200]})
        await self.registry.delete_manifest(name, reference)


class _Resolver:
    """Looks up manifests and configs of one repository, each at most once."""

    def __init__(self, registry: Registry, name: str):
        self.registry = registry
        self.name = name
        self._docs: dict[str, tuple[str, dict[str, Any]] | None] = {}
        self._platforms: dict[str, str] = {}

    async def _manifest(self, digest: str) -> tuple[str, dict[str, Any]] | None:
        if digest not in self._docs:
            record = await self.registry.meta.get_manifest(self.name, digest)
            self._docs[digest] = (None if record is None
                                  else (record.media_type, _json(record.content)))
        return self._docs[digest]

    async def row(self, d: TagDetail, doc: dict[str, Any],
                  validated_at: float | None = None) -> TagRow:
        if d.media_type in INDEX_TYPES:
            kind = 'index'
            platforms = [p for p in (_platform(m.get('platform'))
                                     for m in _descriptors(doc.get('manifests'))) if p]
        else:
            found = doc.get('config')
            config: dict[str, Any] = found if isinstance(found, dict) else {}
            kind = 'image' if config.get('mediaType') in IMAGE_CONFIGS else 'artifact'
            platform = await self.config_platform(config) if kind == 'image' else ''
            platforms = [platform] if platform else []
        return TagRow(d.tag, d.digest, d.media_type, kind, _artifact_type(doc), platforms,
                      await self.total(d.digest, doc, d.media_type), d.pushed_at,
                      validated_at)

    async def total(self, digest: str, doc: dict[str, Any], media_type: str,
                    depth: int = TREE_DEPTH) -> int:
        """Compressed size: config + layers; for an index, its children's totals."""
        if media_type not in INDEX_TYPES:
            blobs = [*_descriptors([doc.get('config')]), *_descriptors(doc.get('layers'))]
            return sum(int(x.get('size', 0)) for x in blobs)
        total = 0
        for child in _descriptors(doc.get('manifests')):
            found = await self._manifest(child['digest']) if depth else None
            if found is not None:
                total += await self.total(child['digest'], found[1], found[0], depth - 1)
        return total

    async def config_platform(self, config: dict[str, Any]) -> str:
        await self.read_platforms([config])
        return self._platforms.get(str(config.get('digest')), '')

    async def read_platforms(self, configs: Iterable[Any]) -> None:
        """Read the platform (os/architecture/variant) of image configs not read yet."""
        wanted = list(dict.fromkeys(
            c['digest'] for c in configs
            if isinstance(c, dict) and c.get('mediaType') in IMAGE_CONFIGS
            and isinstance(c.get('digest'), str) and isinstance(c.get('size'), int)
            and c['size'] <= CONFIG_READ_MAX and c['digest'] not in self._platforms))
        for digest in wanted:
            self._platforms[digest] = await self._read_platform(digest)

    async def _read_platform(self, digest: str) -> str:
        """A config's platform, read through the blob store (at most
        CONFIG_READ_MAX bytes, in its threads)."""
        data = bytearray()
        try:
            chunks = await self.registry.read_blob(Digest.parse(digest), 0,
                                                   CONFIG_READ_MAX + 1)
            async for chunk in chunks:
                data += chunk
        except RegistryError:
            return ''
        return _platform(_json(bytes(data)))

    async def node(self, role: str, desc: dict[str, Any]) -> Node:
        digest = str(desc.get('digest', ''))
        return Node(role, str(desc.get('mediaType', '')), digest, int(desc.get('size', 0)),
                    _platform(desc.get('platform')), desc.get('artifactType') or None,
                    _annotations(desc.get('annotations')),
                    present=role in ('manifest', 'subject')
                    and await self.registry.meta.get_manifest(self.name, digest)
                    is not None)

    async def tree(self, doc: dict[str, Any], media_type: str, depth: int) -> list[Node]:
        if media_type in INDEX_TYPES:
            nodes = []
            for desc in _descriptors(doc.get('manifests')):
                node = await self.node('manifest', desc)
                found = await self._manifest(node.digest) if depth > 1 else None
                if found is not None:
                    node.children = await self.tree(found[1], found[0], depth - 1)
                    if not node.platform and found[0] not in INDEX_TYPES:
                        config = found[1].get('config')
                        if isinstance(config, dict) and config.get('mediaType') in \
                                IMAGE_CONFIGS:
                            node.platform = await self.config_platform(config)
                nodes.append(node)
            return nodes
        config = [await self.node('config', d) for d in _descriptors([doc.get('config')])]
        return config + [await self.node('layer', d)
                         for d in _descriptors(doc.get('layers'))]


def _json(content: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(content)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _pretty(content: bytes) -> str:
    try:
        return json.dumps(json.loads(content), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return content.decode('utf-8', 'replace')


def _descriptors(items: Any) -> Iterable[dict[str, Any]]:
    """The well-formed descriptors of a list (stored manifests were validated, but
    an index may name children of any shape the schema allowed)."""
    if not isinstance(items, list):
        return []
    return [d for d in items if isinstance(d, dict) and isinstance(d.get('digest'), str)]


def _platform(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ''
    parts = [obj.get('os'), obj.get('architecture'), obj.get('variant')]
    return '/'.join(str(p) for p in parts if isinstance(p, str) and p)


def _artifact_type(doc: dict[str, Any]) -> str | None:
    """distribution-spec: artifactType, else the config's media type (images too)."""
    if isinstance(doc.get('artifactType'), str) and doc['artifactType']:
        return str(doc['artifactType'])
    config = doc.get('config')
    if isinstance(config, dict) and config.get('mediaType') not in IMAGE_CONFIGS:
        return str(config.get('mediaType') or '') or None
    return None


def _annotations(obj: Any) -> dict[str, str]:
    if not isinstance(obj, dict):
        return {}
    return {str(k): str(v) for k, v in obj.items()}
