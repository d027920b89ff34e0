"""Grammars the image-spec takes from RFCs, written from the RFCs' ABNF.

- media types: RFC 6838 §4.2 (type and subtype names), parameters as RFC 9110 §8.3.1;
- URIs: RFC 3986 §3 (``urls`` entries);
- annotation keys in reverse domain notation (image-spec annotations.md §Rules);
- I-JSON strings: no lone surrogates (RFC 8259 §8.2, RFC 7493 §2.1).

Every check uses ``fullmatch``: ``$`` would also match before a trailing newline.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any


@functools.cache
def _compiled(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """Compiled on first use: the first request a server answers (GET /v2/) needs
    none of these, and compiling them all was a visible share of its start (issue 17)."""
    return re.compile(pattern, flags)


# RFC 6838 §4.2: restricted-name = restricted-name-first *126restricted-name-chars.
_NAME = r'[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}'
# RFC 9110 §5.6.2 token, §5.6.4 quoted-string (obs-text included).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_PARAMETER = rf'[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED})'
_MEDIA_TYPE = rf'({_NAME})/({_NAME})((?:{_PARAMETER})*)'
# RFC 6838 §4.2: names SHOULD be limited to 64 characters.
NAME_SHOULD_MAX = 64


def media_type_problem(value: str) -> str | None:
    """Why ``value`` is not an RFC 6838 media type, or None. Parameters are allowed
    (RFC 6838 §4.3 defines them; real artifacts carry ``; charset=utf-8``)."""
    if _compiled(_MEDIA_TYPE).fullmatch(value) is None:
        return (f'{value[:100]!r} is not type "/" subtype, each 1-127 characters: a '
                'letter or digit, then letters, digits or !#$&^_.+-')
    return None


def media_type_strict_problem(value: str) -> str | None:
    """The SHOULD-level points of a valid media type: no parameters (the image-spec
    JSON Schema refuses them) and names of at most 64 characters (RFC 6838 §4.2)."""
    m = _compiled(_MEDIA_TYPE).fullmatch(value)
    if m is None:
        return None
    if m[3]:
        return f'{value[:100]!r} has parameters; descriptors name the bare type/subtype'
    if len(m[1]) > NAME_SHOULD_MAX or len(m[2]) > NAME_SHOULD_MAX:
        return f'type and subtype names SHOULD be at most {NAME_SHOULD_MAX} characters'
    return None


# RFC 3986 §2-§3, character classes of the ABNF.
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r'%[0-9A-Fa-f]{2}'
_PCHAR = rf'(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})'
_SCHEME = r'[A-Za-z][A-Za-z0-9+\-.]*'
_USERINFO = rf'(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*'
_REG_NAME = rf'(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*'
_IP_LITERAL = r'\[([^\]/?#@]*)\]'
_URI = (
    rf'(?P<scheme>{_SCHEME}):'
    rf'(?:(?://(?:{_USERINFO}@)?(?:{_IP_LITERAL}|{_REG_NAME})(?::[0-9]*)?'
    rf'(?:/{_PCHAR}*)*)'  # "//" authority path-abempty
    rf'|(?:/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?)'  # path-absolute
    rf'|(?:{_PCHAR}+(?:/{_PCHAR}*)*)'  # path-rootless
    r'|)'  # path-empty
    rf'(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?'
)
_IPV_FUTURE = rf'[vV][0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+'


def uri_problem(value: str) -> str | None:
    """Why ``value`` is not an RFC 3986 URI (scheme ":" hier-part …), or None."""
    m = _compiled(_URI).fullmatch(value)
    literal = m[2] if m is not None else None
    future = literal is not None and _compiled(_IPV_FUTURE).fullmatch(literal)
    if m is not None and literal is not None and not future:
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            m = None
        if '%' in literal:  # Python accepts zone ids; RFC 3986 does not
            m = None
    if m is None:
        return (f'{value[:100]!r} is not a URI: scheme ":" hier-part ["?" query] '
                '["#" fragment], other characters percent-encoded')
    return None


def uri_scheme(value: str) -> str:
    return value.partition(':')[0].lower()


# Two or more DNS labels, dot-separated, at the start of the key: com.example.myKey.
_LABEL = r'[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?'
_REVERSE_DOMAIN = rf'{_LABEL}(?:\.{_LABEL})+(?:[^A-Za-z0-9-].*)?'


def is_reverse_domain(key: str) -> bool:
    return _compiled(_REVERSE_DOMAIN, re.DOTALL).fullmatch(key) is not None


_SURROGATE = '[\ud800-\udfff]'
# A lone surrogate can only come from a \uXXXX escape: UTF-8 cannot encode one.
_SURROGATE_ESCAPE = r'\\u[dD][89a-fA-F]'


def lone_surrogate(text: str, doc: Any) -> str | None:
    """The JSON pointer of the first string (member name or value) in ``doc``, parsed
    from ``text``, that holds a lone surrogate; None when there is none. Cheap when
    ``text`` has no surrogate escape at all (the usual case)."""
    if _compiled(_SURROGATE_ESCAPE).search(text) is None:
        return None
    stack: list[tuple[str, Any]] = [('', doc)]
    while stack:
        pointer, node = stack.pop()
        if isinstance(node, str):
            if _compiled(_SURROGATE).search(node):
                return pointer
        elif isinstance(node, dict):
            for key, value in node.items():
                at = pointer + '/' + key.replace('~', '~0').replace('/', '~1')
                if _compiled(_SURROGATE).search(key):
                    return at.encode('utf-8', 'backslashreplace').decode()
                stack.append((at, value))
        elif isinstance(node, list):
            stack.extend((f'{pointer}/{i}', v) for i, v in enumerate(node))
    return None
