"""The spec's grammars: repository names, tags and digests.

distribution-spec §Pulling manifests gives the name and tag grammars; image-spec
descriptor.md §Digests gives the digest grammar and the registered algorithms.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oci_ref.errors import ErrorCode, RegistryError

if TYPE_CHECKING:
    from hashlib import _Hash

# distribution-spec §Pulling manifests: components of [a-z0-9] joined by '.', '_',
# '__' or runs of '-', any number of '/'-separated components.
NAME_RE = re.compile(
    r'[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*'
)
# Clients cap host[:port]/name at 255 characters (spec implementer note); a name
# alone longer than that can never be pulled, so refuse it up front.
NAME_MAX = 255
TAG_RE = re.compile(r'[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}')
# image-spec descriptor.md §Digests: algorithm ":" encoded.
DIGEST_RE = re.compile(r'([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)')

# image-spec descriptor.md §Registered algorithms: each registered identifier and the
# length of its lower-case hex encoding (the spec's MUST for sha256, sha512, blake3).
REGISTERED: dict[str, int] = {'sha256': 64, 'sha512': 128, 'blake3': 64}
# What this registry can hash (hashlib), so store and serve: a subset of REGISTERED.
ALGORITHMS: dict[str, int] = {'sha256': 64, 'sha512': 128}
_HEX = re.compile(r'[a-f0-9]+')


def is_valid_name(name: str) -> bool:
    return len(name) <= NAME_MAX and NAME_RE.fullmatch(name) is not None


# Names seen valid (every request checks its name; clients ask for few names, so
# the check is a set lookup after the first): bounded, names come from clients.
_VALID_NAMES: set[str] = set()
_VALID_NAMES_KEPT = 4096


def validate_name(name: str) -> str:
    if name in _VALID_NAMES:
        return name
    if is_valid_name(name):
        if len(_VALID_NAMES) >= _VALID_NAMES_KEPT:
            _VALID_NAMES.clear()
        _VALID_NAMES.add(name)
    else:
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            detail={
                'name': name[:300],
                'rule': 'repository names match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*'
                '(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)* and are at most '
                f'{NAME_MAX} characters',
                'spec': 'distribution-spec §Pulling manifests',
            },
        )
    return name


def is_valid_tag(tag: str) -> bool:
    return TAG_RE.fullmatch(tag) is not None


TAG_RULE = {
    'rule': 'tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}',
    'spec': 'distribution-spec §Pulling manifests',
}


@dataclass(frozen=True, slots=True)
class Digest:
    """A digest with a registered (supported) algorithm."""

    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f'{self.algorithm}:{self.encoded}'

    def hasher(self) -> _Hash:
        return hashlib.new(self.algorithm)

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse ``value`` or raise 400 DIGEST_INVALID saying which rule failed."""
        problem = digest_problem(value)
        if problem:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f'invalid digest: {problem}',
                detail={
                    'digest': value[:300],
                    'rule': problem,
                    # 400 for an invalid digest or an unsupported algorithm.
                    'spec': 'distribution-spec §Pushing blobs; image-spec descriptor.md '
                    '§Digests',
                },
            )
        algorithm, _, encoded = value.partition(':')
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = 'sha256') -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def descriptor_digest_problem(value: str) -> str | None:
    """Why ``value`` is not a valid digest *inside a descriptor*, or None.

    descriptor.md §Digests: the grammar is a MUST, and so is the exact encoding of a
    registered algorithm; "implementations SHOULD allow digests with unrecognized
    algorithms to pass validation if they comply with the above grammar", so
    ``multihash+base58:…`` or ``sha256+b64u:…`` are valid here (a registry that cannot
    hash them then simply does not have such content).
    """
    m = DIGEST_RE.fullmatch(value)
    if m is None:
        return 'a digest is <algorithm>:<encoded>, algorithm [a-z0-9]+([+._-][a-z0-9]+)*'
    algorithm, encoded = m.groups()
    length = REGISTERED.get(algorithm)
    if length is not None and (len(encoded) != length or _HEX.fullmatch(encoded) is None):
        return f'{algorithm} digests are {length} lower-case hex characters'
    return None


def digest_problem(value: str) -> str | None:
    """Why ``value`` is not a digest this registry can address content by (URLs,
    ``?digest=``), or None when it is: valid, and of an algorithm it hashes."""
    problem = descriptor_digest_problem(value)
    if problem is not None:
        return problem
    algorithm = value.partition(':')[0]
    if algorithm not in ALGORITHMS:
        return f'unsupported algorithm {algorithm!r}; supported: sha256, sha512'
    return None


def parse_algorithm(value: str) -> str:
    """end-4c ``?digest-algorithm=``: a registered algorithm name, else 400."""
    if value not in ALGORITHMS:
        raise RegistryError(
            ErrorCode.DIGEST_INVALID,
            f'unsupported digest algorithm {value!r}',
            detail={
                'digest-algorithm': value[:100],
                'rule': 'supported algorithms: sha256, sha512',
                'spec': 'distribution-spec §Pushing a blob in chunks',
            },
        )
    return value


def is_digest_reference(reference: str) -> bool:
    """A manifest reference with ':' is meant as a digest (tags cannot hold ':')."""
    return ':' in reference
