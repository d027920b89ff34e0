"""Templates (Jinja2, autoescaped) and the filters they use.

Everything from a manifest reaches the page through autoescaping: no template
marks anything ``|safe``, and the page's Content-Security-Policy allows no script
at all, so even a missed escape could not run.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

# No script, no inline style, nothing from elsewhere; forms post only to us; no
# framing (clickjacking of the delete button).
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; script-src 'none'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    'Content-Security-Policy': CSP,
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'same-origin',
    'X-Frame-Options': 'DENY',
    # Pages depend on who asks: never shared by a cache.
    'Cache-Control': 'no-store',
}


def human_size(n: int | None) -> str:
    if n is None:
        return '-'
    size = float(n)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if size < 1024 or unit == 'TiB':
            return f'{int(size)} {unit}' if unit == 'B' else f'{size:.1f} {unit}'
        size /= 1024
    return f'{n} B'


def short_digest(digest: str) -> str:
    algorithm, _, encoded = digest.partition(':')
    return f'{algorithm}:{encoded[:12]}' if encoded else digest


def when(timestamp: float | None) -> str:
    if not timestamp:
        return '-'
    return datetime.fromtimestamp(timestamp, UTC).strftime('%Y-%m-%d %H:%M:%S UTC')


# What tags and digests are made of: nothing to quote (the common case, fast).
_PLAIN = re.compile(r'[A-Za-z0-9_.:-]*')


def ui_path(name: str, *rest: str) -> str:
    """``/ui/r/<name>/…``: repository names hold only [a-z0-9._/-], so they go into
    the path as they are; references are quoted unless plainly safe (':' is kept)."""
    if not rest:
        return f'/ui/r/{name}/'
    return f'/ui/r/{name}/-/' + '/'.join(
        p if _PLAIN.fullmatch(p) else quote(p, safe=':') for p in rest)


def query(**params: Any) -> str:
    return '?' + urlencode({k: v for k, v in params.items() if v not in (None, '')})


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader('oci_ref.ui', 'templates'),
        autoescape=select_autoescape(['html'], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(size=human_size, short=short_digest, when=when)
    env.globals.update(ui_path=ui_path, query=query)
    return env


ENV = _environment()


def render(template: str, **context: Any) -> bytes:
    return ENV.get_template(template).render(**context).encode()
