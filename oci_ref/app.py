"""Composition root: picks the stores, builds the registry and the Falcon ASGI app;
holds the route table."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from oci_ref.api.access import AccessControl, FailedLogins, Token
from oci_ref.api.blobs import Blob, BlobUploads
from oci_ref.api.health import Health, Metrics, Ready
from oci_ref.api.listing import Catalog, OpenAPIDocument, Ping, Referrers, TagList
from oci_ref.api.manifests import Manifest
from oci_ref.api.mirror import CutOff, UpstreamRouting
from oci_ref.auth import Access, AccessFile, Htpasswd, TokenIssuer
from oci_ref.config import Config
from oci_ref.errors import RegistryError
from oci_ref.hooks import Notifier
from oci_ref.http import (
    ASGIApp,
    DistributionMiddleware,
    RequestGuard,
    handle_registry_error,
    handle_store_unavailable,
    handle_unexpected,
)
from oci_ref.lifecycle import Lifecycle
from oci_ref.metrics import Observe
from oci_ref.registry import Policy, Registry
from oci_ref.routing import OCIRouter
from oci_ref.storage import MetadataStore, StoreUnavailable, open_stores
from oci_ref.ui.mount import Mount

if TYPE_CHECKING:
    from oci_ref.upstream.cache import PullThrough

Route = tuple[str, object, str | None]
log = logging.getLogger('oci_ref')


def check_access_files(config: Config) -> None:
    """Raises AuthError for an unusable htpasswd or access file (``oci-ref serve``
    checks them once, before any worker starts)."""
    if config.htpasswd:
        Htpasswd(config.htpasswd)
    if config.access:
        AccessFile(config.access, anonymous_read=config.anonymous_read)


def access_control(config: Config, store: MetadataStore) -> AccessControl:
    """Raises AuthError for an unusable htpasswd or access file. The signing key and
    the failed-login counts are in ``store``, shared by every worker and replica
    (the key is read at its first use; ``oci-ref serve`` makes it before workers
    start)."""
    htpasswd = Htpasswd(config.htpasswd) if config.htpasswd else None
    issuer = (TokenIssuer.from_store(store, config.root, config.token_service,
                                     config.token_ttl)
              if config.auth == 'token' else None)
    access = (AccessFile(config.access, anonymous_read=config.anonymous_read)
              if config.access else Access(anonymous_read=config.anonymous_read))
    return AccessControl(config.auth, access, htpasswd, issuer,
                         FailedLogins(store, config.login_failures),
                         realm=config.token_realm,
                         health_open=config.health_open,
                         metrics_open=config.metrics_open)


def routes(config: Config, registry: Registry, notifier: Notifier | None = None,
           control: AccessControl | None = None, cache: PullThrough | None = None
           ) -> list[Route]:
    """The route table: (template, resource, responder suffix); ``cache`` answers
    names routed to an upstream (issue 13)."""
    notifier = notifier or Notifier(())
    control = control or access_control(config, registry.meta)
    uploads = BlobUploads(registry, notifier)
    return [
        ('/v2/', Ping(), None),
        ('/v2', Ping(), None),
        ('/v2/_catalog', Catalog(registry, config.page_max), None),
        ('/v2/{name}/blobs/{digest}', Blob(registry, notifier, cache), None),
        ('/v2/{name}/blobs/uploads/', uploads, None),
        ('/v2/{name}/blobs/uploads/{session_id}', uploads, 'session'),
        ('/v2/{name}/manifests/{reference}',
         Manifest(registry, config.manifest_max_bytes, notifier, strict=config.strict,
                  cache=cache),
         None),
        ('/v2/{name}/tags/list', TagList(registry, _tag_page_max(config), cache), None),
        ('/v2/{name}/referrers/{digest}', Referrers(registry, config.referrers_page_max,
                                                   cache), None),
        ('/openapi.yaml', OpenAPIDocument(), None),
        ('/healthz', Health(), None),
        ('/readyz', Ready(registry, control.readiness_checks()), None),
        ('/metrics', Metrics(registry, {u.name: u.cache_max_bytes for u in config.upstream
                                          if u.cache_max_bytes}), None),
        ('/token', Token(control), None),
    ]


def _tag_page_max(config: Config) -> int:
    if not config.variations:
        return config.page_max
    from oci_ref.variations import tag_page_max

    return tag_page_max(config)


def open_registry(config: Config) -> Registry:
    """The registry over the stores ``config`` picks (built once per process)."""
    stores = open_stores(config)
    return Registry(stores.blobs, stores.meta, policy=Policy.from_config(config))


def create_app(config: Config | None = None, registry: Registry | None = None
               ) -> ASGIApp:
    config = config or Config()
    # The variations and the faults are imported only when set, as the linter and
    # the web view below: none is on the default start's path (issue 17).
    if config.variations:
        from oci_ref.variations import adjust

        config = adjust(config)
    registry = registry or open_registry(config)
    notifier = Notifier(config.hooks, config.hook_queue, config.hook_retries)
    control = access_control(config, registry.meta)
    cache = None
    mirror: list[Any] = []
    if config.upstream:
        # Only here: the cache brings httpx, which a registry without upstreams
        # never needs (startup time).
        from oci_ref.upstream.cache import PullThrough
        from oci_ref.upstream.pool import Upstreams

        cache = PullThrough(registry, Upstreams(
            config.upstream, manifest_max_bytes=config.manifest_max_bytes))
        # Before access control: it checks a proxied name by its cache name.
        mirror = [UpstreamRouting(cache, config.purge_interval)]
    # Names are validated before access is checked: both run per request, and a 400
    # for a name that can never exist reveals nothing. With auth off, access control
    # has nothing to check: it is left out of the chain, which Falcon would
    # otherwise await on every request. The mirror's routing goes before it: access
    # control checks a proxied name by its cache name.
    middleware: list[Any] = [DistributionMiddleware(), *mirror,
                             *([control] if config.auth != 'none' else []),
                             Lifecycle(config, registry, notifier)]
    app = falcon.asgi.App(
        router=OCIRouter(),
        middleware=middleware,
        cors_enable=False,
    )
    # The spec's paths are exact: /v2/ and /v2 both answer, uploads/ keeps its slash.
    app.req_options.strip_url_path_trailing_slash = False
    app.req_options.keep_blank_qs_values = True
    app.req_options.auto_parse_qs_csv = False
    for template, resource, suffix in routes(config, registry, notifier, control, cache):
        if suffix:
            app.add_route(template, resource, suffix=suffix)
        else:
            app.add_route(template, resource)

    lint_store = None
    if config.lint:
        # Imported only when on, as the web view below: neither is on the path of
        # the first request, and both cost start time (issue 17).
        from oci_ref import lint

        lint_store = lint.SQLiteLintStore(config.root)
        for template, resource, suffix in lint.routes(lint_store):
            app.add_route(template, resource, **({'suffix': suffix} if suffix else {}))
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_unexpected)
    app.add_error_handler(RegistryError, handle_registry_error)
    app.add_error_handler(StoreUnavailable, handle_store_unavailable)
    # The web view (/ui/) beside the API, under the same access rules.
    served: ASGIApp = (Mount(app, lambda: _ui_app(registry, control, config))
                       if config.ui else app)
    if cache is not None:
        served = CutOff(served)
    # Variations and faults act around the registry, never inside it (README).
    if config.variations:
        from oci_ref.variations import Variations

        served = Variations(served, config, registry)
    if config.faults:
        from oci_ref.faults import Faults, Plan, new_seed, parse

        seed = config.faults_seed if config.faults_seed >= 0 else new_seed()
        log.warning('fault injection on: %s (seed %d)', config.faults, seed)
        served = Faults(served, Plan(parse(config.faults), seed))
    observed = Observe(RequestGuard(served))
    if lint_store is None:
        return observed
    # The linter sees every answer, injected faults included (its Retry-After rule).
    return lint.wrap(observed, config, lint_store)


def _ui_app(registry: Registry, control: AccessControl, config: Config) -> ASGIApp:
    from oci_ref.ui.app import ui_app

    return ui_app(registry, control, config.upstream)


def create_app_from_env() -> ASGIApp:
    """uvicorn factory for worker processes: the resolved config comes by env (its
    secret settings by a file, see Config.hand_to_workers)."""
    return create_app(Config.from_env())
