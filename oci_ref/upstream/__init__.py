"""Pull-through cache and mirror of other registries: config, routing, credentials
and an async client for upstream registries (issue 13).

One module per concern: config (``[[upstream]]`` tables), routing (own name or
upstream, pure functions), credentials (auth.json and environment), auth (Basic and
the Docker token flow), client (manifests, blobs, tags, referrers over httpx),
verify (digest-checking stream) and errors (failures and their OCI errors).
"""
