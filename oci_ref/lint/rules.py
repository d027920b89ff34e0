"""The client lint rules: what a request must (or should) look like, and the checks.

Each rule names the distribution-spec text it enforces and its section. A check is a
pure function of one :class:`Exchange` (the request and the head of the answer the
registry gave it) and the :class:`State` the registry handed out earlier (upload
Locations, pagination Links, Retry-After deadlines), so that a rule can be proved
with a hand-made request and no server.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

UPLOAD_PARAM = '_lint'


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    # MUST / SHOULD: the spec's (or an RFC it defers to) keyword; FORM: the request
    # differs from the form the spec gives for it, where no keyword applies.
    level: str
    section: str
    spec: str  # the rule's text, quoted or closely paraphrased


RULES: dict[str, Rule] = {r.id: r for r in (
    Rule('manifest-content-type',
         'manifest PUT Content-Type differs from the body\'s mediaType',
         'MUST', 'distribution-spec §Pushing Manifests',
         'If a manifest includes a mediaType field, clients MUST set the Content-Type '
         'header to the value specified by the mediaType field.'),
    Rule('manifest-content-type-params',
         'manifest PUT Content-Type missing or with parameters',
         'SHOULD', 'distribution-spec §Pushing Manifests',
         'Clients SHOULD set the Content-Type header to the type of the manifest being '
         'pushed. The client SHOULD NOT include parameters on the Content-Type header.'),
    Rule('manifest-accept',
         'manifest GET/HEAD without an Accept covering the stored type',
         'SHOULD', 'distribution-spec §Pulling manifests',
         'The client SHOULD include an Accept header indicating which manifest content '
         'types it supports.'),
    Rule('chunk-out-of-order',
         'chunk not contiguous with what the session holds',
         'MUST', 'distribution-spec §Pushing a blob in chunks',
         'Chunks MUST be uploaded in order, with the first byte of a chunk being the '
         'last chunk\'s <end-of-range> plus one. The first chunk\'s range MUST begin '
         'with 0.'),
    Rule('chunk-range-syntax',
         'chunk Content-Range malformed or disagreeing with Content-Length',
         'MUST', 'distribution-spec §Pushing a blob in chunks',
         'The <range> refers to the byte range of the chunk, and MUST be inclusive on '
         'both ends. It MUST match the following regular expression: '
         '^[0-9]+-[0-9]+$. The <length> is the content-length, in bytes, of the '
         'current chunk.'),
    Rule('chunk-length-missing',
         'chunk sent without Content-Length (chunked transfer coding)',
         'FORM', 'distribution-spec §Pushing a blob in chunks',
         'To upload a chunk, issue a PATCH request ... with the following headers: '
         'Content-Type, Content-Range: <range>, Content-Length: <length>; a closing '
         'PUT with a final chunk sends Content-Length: <length of chunk>.'),
    Rule('chunk-streamed',
         'PATCH without Content-Range (a "streamed" upload the spec does not define)',
         'FORM', 'distribution-spec §Pushing a blob in chunks',
         'To upload a chunk, issue a PATCH request ... with the following headers: '
         'Content-Type, Content-Range: <range>, Content-Length: <length>. (Registries '
         'and the conformance suites accept a PATCH without Content-Range as an '
         'append; the spec text has no such request.)'),
    Rule('upload-url-hand-built',
         'upload URL built by hand instead of the Location the registry returned',
         'SHOULD', 'distribution-spec §POST then PUT',
         'The <blob-push-location> MAY contain critical query parameters. It SHOULD '
         'match exactly the <blob-push-location> obtained from the POST request. It '
         'SHOULD NOT be assembled manually by clients except where absolute/relative '
         'conversion is necessary.'),
    Rule('upload-url-stale',
         'chunk or close sent to an earlier Location, not the latest one returned',
         'SHOULD', 'distribution-spec §Pushing a blob in chunks',
         'Each consecutive chunk upload SHOULD use the <blob-push-location> provided '
         'in the response to the previous chunk upload.'),
    Rule('pagination-link',
         'next page requested with n/last values not taken from the Link header',
         'SHOULD', 'distribution-spec §Listing Tags (implementer\'s note)',
         'When available, clients should prefer the Link header over using the last '
         'parameter for pagination; the Link is set per RFC 5988 with rel="next".'),
    Rule('docker-headers',
         'Docker-only header sent as if the spec defined it for requests',
         'SHOULD', 'distribution-spec §Legacy Docker support HTTP headers',
         'The client MAY encounter Docker-specific headers, such as '
         'Docker-Distribution-API-Version. Unless documented elsewhere in the spec, '
         'these headers are OPTIONAL and clients SHOULD NOT depend on them.'),
    Rule('retry-after-ignored',
         'request repeated before the Retry-After the registry sent had elapsed',
         'SHOULD', 'distribution-spec §Error Codes; RFC 9110 §10.2.3',
         'A 429 Too Many Requests response SHOULD include a Retry-After header; '
         'Retry-After indicates how long the user agent ought to wait before making '
         'a follow-up request.'),
    Rule('ns-not-proxy',
         'ns query parameter sent to a registry that is not a proxy',
         'SHOULD', 'distribution-spec §Registry Proxying',
         'A client SHOULD avoid sending ns query parameters to non-proxy registries.'),
    Rule('credentials-cleartext',
         'credentials sent over plain HTTP to a non-loopback address',
         'SHOULD', 'RFC 7617 §4 / RFC 6750 §5.3 (distribution-spec §API: RFC 9110 '
         'where the spec is silent)',
         'Basic credentials travel in clear text and bearer tokens must be protected '
         'in transit: send them only over TLS.'),
    Rule('credentials-in-query',
         'token or password in the query string',
         'SHOULD', 'RFC 6750 §2.3, §5.3 (distribution-spec §API)',
         'Bearer tokens SHOULD NOT be passed in page URLs (query parameters); URLs '
         'end up in logs and proxies.'),
    Rule('credentials-to-proxy',
         'Authorization sent to a proxy registry that asked for none',
         'SHOULD', 'distribution-spec §Registry Proxying (implementer\'s note)',
         'Authorization credentials for an upstream registry SHOULD NOT be sent to a '
         'proxy registry unless explicitly configured or instructed to do so by the '
         'credential owner.'),
)}

# What the registry side cannot see, for the README and the report.
NOT_OBSERVABLE = (
    ('Authorization forwarded across hosts on a redirect', 'distribution-spec §API',
     'the other host gets it, not us'),
    ('content not verified against the digest used to fetch it',
     'distribution-spec §Pulling manifests / §Content Digests',
     'verification happens in the client'),
    ('pagination stopped before the last Link', 'distribution-spec §Listing Tags',
     'a client that stops early looks like one that needed no more'),
    ('Docker-Content-Digest or Docker-Distribution-API-Version relied on in answers',
     'distribution-spec §Legacy Docker support HTTP headers',
     'the registry sends them; whether a client needs them is only visible when '
     'they are absent'),
    ('unknown error codes not treated as UNKNOWN', 'distribution-spec §Error Codes',
     'client-side handling'),
)


@dataclass
class Exchange:
    """One request and the head of its answer, as the linter saw them."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]  # request headers, names lower-case, in order
    status: int
    response_headers: dict[str, str]  # names lower-case
    endpoint: str = 'other'  # spec endpoint id (oci_ref.metrics.endpoint_id)
    scheme: str = 'http'
    server_host: str | None = None
    client_addr: str = ''
    body_bytes: int = 0
    manifest_body: bytes | None = None  # manifest PUTs only, when small enough
    now: float = 0.0
    is_proxy: bool = False
    auth_on: bool = False
    params: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.params and self.query:
            self.params = parse_qsl(self.query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return ', '.join(values) if values else None

    def param(self, name: str) -> str | None:
        values = [v for k, v in self.params if k == name]
        return values[-1] if values else None

    @property
    def user_agent(self) -> str:
        return self.header('user-agent') or ''

    @property
    def retry_key(self) -> str:
        """What a Retry-After applies to: the endpoint (or the path when no route
        matched, e.g. a fault injected before routing)."""
        return self.endpoint if self.endpoint != 'other' else f'{self.method} {self.path}'


class State(Protocol):
    """What the registry handed out before (shared by every worker)."""

    def upload_tokens(self, session: str) -> list[str]:
        """Tokens put in the Locations of ``session``, oldest first."""

    def link_issued(self, path: str, query: str) -> bool:
        """Whether a Link with exactly this target was sent."""

    def retry_not_before(self, client: str, key: str) -> float | None:
        """When ``client`` may repeat ``key`` (a Retry-After we sent), if pending."""


Finding = tuple[str, str]  # (rule id, what exactly was wrong)
Check = Callable[[Exchange, State], Iterator[Finding]]
_CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    _CHECKS.append(fn)
    return fn


def evaluate(ex: Exchange, state: State) -> list[Finding]:
    return [finding for fn in _CHECKS for finding in fn(ex, state)]


def normal_query(query: str) -> str:
    """A query compared by its decoded parameters, not its spelling."""
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def client_key(user_agent: str, address: str) -> str:
    return f'{user_agent}\x00{address}'


# ------------------------------------------------------------------ manifests ----

def _bare(media_type: str) -> str:
    return media_type.split(';', 1)[0].strip().lower()


@check
def manifest_content_type(ex: Exchange, state: State) -> Iterator[Finding]:
    if ex.endpoint != 'end-7':
        return
    sent = ex.header('content-type')
    if sent is None:
        yield 'manifest-content-type-params', 'no Content-Type header'
    elif ';' in sent:
        yield 'manifest-content-type-params', f'Content-Type has parameters: {sent!r}'
    if ex.manifest_body is None:
        return
    try:
        doc = json.loads(ex.manifest_body)
    except ValueError:
        return  # the registry answers MANIFEST_INVALID; not a header question
    media_type = doc.get('mediaType') if isinstance(doc, dict) else None
    if isinstance(media_type, str) and sent is not None and \
            _bare(sent) != media_type.lower():
        yield ('manifest-content-type',
               f'Content-Type {sent!r} but the body\'s mediaType is {media_type!r}')
    elif isinstance(media_type, str) and sent is None:
        yield ('manifest-content-type',
               f'no Content-Type but the body\'s mediaType is {media_type!r}')


def accept_covers(accept: str, media_type: str) -> bool:
    """RFC 9110 §12.5.1: whether any media range in ``accept`` (q > 0) matches."""
    wanted = _bare(media_type)
    kind = wanted.split('/', 1)[0]
    for item in accept.split(','):
        parts = [p.strip() for p in item.split(';')]
        rng = parts[0].lower()
        q = 1.0
        for p in parts[1:]:
            if p.lower().startswith('q='):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 1.0
        if q > 0 and rng in (wanted, '*/*', f'{kind}/*'):
            return True
    return False


@check
def manifest_accept(ex: Exchange, state: State) -> Iterator[Finding]:
    if ex.endpoint != 'end-3' or ex.status != 200:
        return
    served = ex.response_headers.get('content-type', '')
    accept = ex.header('accept')
    if accept is None:
        yield 'manifest-accept', f'no Accept header; the stored type is {served!r}'
    elif served and not accept_covers(accept, served):
        yield ('manifest-accept',
               f'Accept {accept[:300]!r} does not cover the stored type {served!r}')


# -------------------------------------------------------------------- uploads ----

_SPEC_RANGE = re.compile(r'[0-9]+-[0-9]+')


@check
def chunks(ex: Exchange, state: State) -> Iterator[Finding]:
    if ex.endpoint not in ('end-5', 'end-6'):
        return
    rng = ex.header('content-range')
    length = ex.header('content-length')
    sends_body = ex.body_bytes > 0 or (length not in (None, '0'))
    if ex.status == 416 and rng is not None:
        yield ('chunk-out-of-order',
               f'Content-Range {rng!r} does not start where the session ends '
               f'(Range: {ex.response_headers.get("range", "?")})')
    if ex.endpoint == 'end-6' and not sends_body:
        return  # closing PUT without a chunk: neither header is needed
    if length is None:
        yield 'chunk-length-missing', f'{ex.method} with a body but no Content-Length'
    # A closing PUT with the whole blob (monolithic) has no range to give.
    if rng is None and ex.endpoint == 'end-5':
        yield 'chunk-streamed', 'PATCH without Content-Range'
    if rng is not None and not _SPEC_RANGE.fullmatch(rng.strip()):
        yield 'chunk-range-syntax', f'Content-Range {rng!r} is not <start>-<end>'
    elif rng is not None and length is not None and length.strip().isdigit():
        start, end = (int(x) for x in rng.strip().split('-'))
        if end >= start and end - start + 1 != int(length):
            yield ('chunk-range-syntax',
                   f'Content-Range {rng!r} covers {end - start + 1} bytes, '
                   f'Content-Length says {length}')


def upload_session(path: str) -> str | None:
    """``/v2/<name>/blobs/uploads/<id>`` -> that path, else None."""
    head, sep, session_id = path.rpartition('/blobs/uploads/')
    return path if sep and head.startswith('/v2/') and session_id else None


@check
def upload_url(ex: Exchange, state: State) -> Iterator[Finding]:
    if ex.endpoint not in ('end-5', 'end-6', 'end-13', 'end-14'):
        return
    session = upload_session(ex.path)
    if session is None:
        return
    tokens = state.upload_tokens(session)
    if not tokens:
        return  # a session the linter never handed out (made before --lint)
    token = ex.param(UPLOAD_PARAM)
    if token is None:
        yield ('upload-url-hand-built',
               f'{ex.method} {ex.path} lacks the query the returned Location carried')
    elif token not in tokens:
        yield ('upload-url-hand-built',
               f'{ex.method} {ex.path}: the query is not one of the returned Locations')
    elif token != tokens[-1] and ex.endpoint in ('end-5', 'end-6'):
        # §Pushing a blob in chunks: GET status and cancel may use any earlier one.
        yield ('upload-url-stale',
               f'{ex.method} to the Location of an earlier response '
               f'({len(tokens) - 1 - tokens.index(token)} newer ones were returned)')


# ---------------------------------------------------------------- listing ----

@check
def pagination(ex: Exchange, state: State) -> Iterator[Finding]:
    if ex.endpoint not in ('end-8', 'catalog') or ex.param('last') is None:
        return
    if not state.link_issued(ex.path, normal_query(ex.query)):
        yield ('pagination-link',
               f'n={(ex.param("n") or "")[:20]!r} last={(ex.param("last") or "")[:130]!r}: '
               f'not the query of a Link this registry sent')


# ---------------------------------------------------------------- headers ----

_DOCKER_REQUEST_HEADERS = ('docker-content-digest', 'docker-distribution-api-version',
                           'docker-upload-uuid')


@check
def docker_headers(ex: Exchange, state: State) -> Iterator[Finding]:
    sent = [name for name, _ in ex.headers if name in _DOCKER_REQUEST_HEADERS]
    if sent and ex.path.startswith('/v2'):
        yield ('docker-headers',
               f'request carries {", ".join(sorted(set(sent)))} (a response header of '
               f'the Docker registry API; the spec defines no request use)')


@check
def retry_after(ex: Exchange, state: State) -> Iterator[Finding]:
    client = client_key(ex.user_agent, ex.client_addr)
    not_before = state.retry_not_before(client, ex.retry_key)
    if not_before is not None and ex.now < not_before:
        yield ('retry-after-ignored',
               f'{ex.method} {ex.path} came {not_before - ex.now:.1f}s before the '
               f'Retry-After sent for {ex.retry_key} had elapsed')


@check
def ns_param(ex: Exchange, state: State) -> Iterator[Finding]:
    if not ex.is_proxy and ex.param('ns') is not None and ex.path.startswith('/v2/'):
        yield 'ns-not-proxy', f'ns={ex.param("ns")!r} but no upstream is configured'


# ------------------------------------------------------------ credentials ----

_SECRET_PARAMS = re.compile(r'(?:access_?token|token|password|passwd|secret|'
                            r'client_secret|refresh_token|api_?key)', re.I)


def is_loopback(host: str | None) -> bool:
    if host is None:
        return True  # a unix socket: nothing crosses a network
    if host.lower() == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False


@check
def credentials(ex: Exchange, state: State) -> Iterator[Finding]:
    auth = ex.header('authorization')
    scheme = auth.split(' ', 1)[0] if auth else ''
    if auth and ex.scheme == 'http' and not is_loopback(ex.server_host):
        yield ('credentials-cleartext',
               f'Authorization: {scheme} over http to {ex.server_host}')
    secret = sorted({k for k, _ in ex.params if _SECRET_PARAMS.fullmatch(k)})
    if secret:
        yield 'credentials-in-query', f'query parameter {", ".join(secret)}'
    if auth and ex.is_proxy and not ex.auth_on:
        yield ('credentials-to-proxy',
               f'Authorization: {scheme} sent to a proxy that runs without auth')


__all__ = ['NOT_OBSERVABLE', 'RULES', 'UPLOAD_PARAM', 'Exchange', 'Finding', 'Rule',
           'State', 'accept_covers', 'client_key', 'evaluate', 'normal_query',
           'upload_session']
