"""One S3-compatible endpoint, reached through aiobotocore: sessions, deadlines, errors.

Every call runs under this store's own deadline (``s3_timeout``): botocore's
``read_timeout`` does not cover a PUT sent with ``Expect: 100-continue`` to a server
that accepted the connection and stalled (tests/e2e/test_engines.py), so a stuck S3
would otherwise hold a request forever. A call that misses its deadline, cannot
connect, or gets an error the client did not cause becomes
:class:`StoreUnavailable` naming the store (503 with Retry-After), never a 500.

Presigned URLs are always SigV4 (``signature_version='s3v4'``): botocore would sign
them with SigV2 in us-east-1, which R2 and Garage refuse. Credentials come from the
standard chain (``AWS_*`` environment, shared profile, instance role); nothing here
holds or logs them.

aiobotocore clients are bound to the event loop that made them: the client lives on
the store's own loop in its own thread, and calls hop to it (as file I/O hops to the
filesystem store's threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oci_ref.storage.interfaces import StoreUnavailable

if TYPE_CHECKING:
    from oci_ref.config import Config

# Codes that mean "no such thing here", answered by the caller, not as a failure.
MISSING = frozenset({'NoSuchKey', 'NotFound', '404', 'NoSuchUpload'})


class S3Missing(Exception):
    """The key (or multipart upload) does not exist."""


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str
    prefix: str = ''
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    timeout: float = 30.0
    redirect: bool = False
    redirect_ttl: int = 300

    @classmethod
    def from_config(cls, config: Config) -> S3Settings:
        prefix = config.s3_prefix.strip('/')
        return cls(bucket=config.s3_bucket, prefix=f'{prefix}/' if prefix else '',
                   endpoint_url=config.s3_endpoint_url or None,
                   region=config.s3_region or None, path_style=config.s3_path_style,
                   timeout=config.s3_timeout, redirect=config.s3_redirect,
                   redirect_ttl=config.s3_redirect_ttl)


@functools.cache
def _session() -> Any:
    """One botocore session per process: it caches the S3 service model and endpoint
    rules, which take most of a second to load for each new session."""
    import aiobotocore.session

    return aiobotocore.session.get_session()


class S3Client:
    """Calls on one bucket, each under the deadline, errors mapped."""

    def __init__(self, settings: S3Settings, name: str):
        # Imported here: the scale extra is needed only when S3 is configured
        # (tests/unit/test_packaging.py).
        from botocore.config import Config as BotoConfig

        self.settings = settings
        self.name = name
        self._session = _session()
        self._boto_config = BotoConfig(
            signature_version='s3v4',
            s3={'addressing_style': 'path' if settings.path_style else 'auto'},
            connect_timeout=settings.timeout, read_timeout=settings.timeout,
            # Retries must fit inside our own deadline; the client retries the rest.
            retries={'max_attempts': 2, 'mode': 'standard'},
            max_pool_connections=64,
        )
        self._client: Any = None
        self._client_ctx: Any = None
        # The store's own event loop, in its own thread: aiobotocore clients are
        # bound to the loop that made them, and a process may run several loops
        # (in-process test clients run one per request); calls from any loop hop
        # here, and close() can close the connections cleanly.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name='oci-ref-s3', daemon=True)
        self._thread.start()

    async def _ensure_client(self) -> Any:
        if self._client is None:
            ctx = self._session.create_client(
                's3', endpoint_url=self.settings.endpoint_url,
                region_name=self.settings.region, config=self._boto_config)
            self._client = await ctx.__aenter__()
            self._client_ctx = ctx
        return self._client

    async def _here(self, coro: Any) -> Any:
        """Run ``coro`` on the store's loop; cancelling the caller cancels it."""
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(coro, self._loop))

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def shut() -> None:
            if self._client_ctx is not None:
                await self._client_ctx.__aexit__(None, None, None)
                self._client = self._client_ctx = None

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def call(self, op: str, **kw: Any) -> Any:
        """``op`` (a client method name, e.g. 'put_object') on the bucket."""
        async def run() -> Any:
            client = await self._ensure_client()
            return await getattr(client, op)(Bucket=self.settings.bucket, **kw)

        return await self.guard(op, run())

    async def guard(self, op: str, awaitable: Any) -> Any:
        """Await ``awaitable`` (an S3 call or a body read) on the store's loop,
        under the deadline."""
        from botocore.exceptions import BotoCoreError, ClientError

        timeout = self.settings.timeout
        try:
            return await self._here(asyncio.wait_for(awaitable, timeout))
        except TimeoutError:
            raise StoreUnavailable(
                self.name, f'S3 {op} did not answer within {timeout:g} s') from None
        except ClientError as ex:
            code = str(ex.response.get('Error', {}).get('Code', ''))
            if code in MISSING:
                raise S3Missing(code) from None
            raise StoreUnavailable(self.name, f'S3 {op} failed: {code or ex}') from None
        except BotoCoreError as ex:
            # EndpointConnectionError, ConnectionClosedError, ReadTimeoutError...
            raise StoreUnavailable(self.name,
                                   f'S3 {op} failed: {type(ex).__name__}') from None
        except OSError as ex:
            raise StoreUnavailable(self.name, f'S3 {op} failed: {ex}') from None

    async def presign_get(self, key: str) -> str:
        async def run() -> str:
            client = await self._ensure_client()
            return await client.generate_presigned_url(
                'get_object', Params={'Bucket': self.settings.bucket, 'Key': key},
                ExpiresIn=self.settings.redirect_ttl)

        return await self.guard('presign', run())


__all__ = ['S3Client', 'S3Missing', 'S3Settings']
