"""Client for remote OpenAI-compatible engines: inhouse nodes, vLLM, llama.cpp, Ollama.

Bodies pass through as JSON objects (only ``model`` is replaced), so features the
gateway does not interpret (tools, response formats, logprobs) still reach the
upstream. One pooled aiohttp session serves all upstreams.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from inhouse.config import GatewaySettings
from inhouse.errors import (
    ConfigurationError,
    InhouseError,
    RateLimitError,
    UpstreamError,
    UpstreamRejectedError,
)

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
_SSE_DATA = b"data:"
_RELAYED_STATUSES = frozenset({400, 404, 413, 422, 429})


def upstream_tls(settings: GatewaySettings) -> ssl.SSLContext | bool:
    """Verification (and, with a client certificate, mutual TLS) for https upstreams."""
    if settings.upstream_ca_file is None and settings.upstream_client_cert_file is None:
        return True  # aiohttp's default: verify against the system's CAs
    context = ssl.create_default_context(
        cafile=str(settings.upstream_ca_file) if settings.upstream_ca_file else None
    )
    if settings.upstream_client_cert_file is not None:
        key = settings.upstream_client_key_file
        try:
            context.load_cert_chain(
                str(settings.upstream_client_cert_file), str(key) if key else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the upstream client certificate "
                f"{settings.upstream_client_cert_file}: {exc}"
            ) from None
    return context


def create_session(settings: GatewaySettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_pool_size,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
        ssl=upstream_tls(settings),
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=settings.upstream_connect_timeout_seconds,
        sock_read=settings.upstream_read_timeout_seconds,
    )
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True)


class UpstreamClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._urls: dict[str, URL] = {}
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._headers.update(headers or {})

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base_url + path)
        return url

    async def post_json(self, path: str, body: JsonObject) -> JsonObject:
        try:
            async with self._session.post(
                self._url(path),
                data=orjson.dumps(body),
                headers=self._headers,
                allow_redirects=False,  # a redirect would carry the key to another server
            ) as response:
                payload = await response.read()
                if response.status != 200:
                    raise _status_error(response.status, payload)
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream unreachable: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise UpstreamError("upstream timed out") from exc
        return _decode_object(payload)

    async def open_stream(self, path: str, body: JsonObject) -> UpstreamStream:
        """Start a streamed request; fails here (before any byte is sent on) if refused."""
        try:
            response = await self._session.post(
                self._url(path),
                data=orjson.dumps(body),
                headers=self._headers,
                allow_redirects=False,
            )
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream unreachable: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise UpstreamError("upstream timed out") from exc
        if response.status != 200:
            try:
                payload = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                payload = b""
            finally:
                response.release()
            raise _status_error(response.status, payload)
        return UpstreamStream(response)


class UpstreamStream:
    """A streamed answer being received: its SSE ``data`` objects, and the connection,
    which ``release`` gives back (also when nothing was read)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def payloads(self) -> AsyncGenerator[JsonObject, None]:
        """Each ``data`` object until ``[DONE]``; the connection is released at the end."""
        try:
            async for line in self._response.content:
                if not line.startswith(_SSE_DATA):
                    continue
                data = line[len(_SSE_DATA) :].strip()
                if data == b"[DONE]":
                    return
                yield _decode_object(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"upstream stream broke: {type(exc).__name__}") from exc
        finally:
            self._response.release()

    def release(self) -> None:
        self._response.release()


def _decode_object(payload: bytes) -> JsonObject:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamError("upstream answered with invalid JSON") from None
    if not isinstance(value, dict):
        raise UpstreamError("upstream answered with a JSON value that is not an object")
    return value


def _status_error(status: int, payload: bytes) -> InhouseError:
    message, code = f"upstream answered HTTP {status}", None
    try:
        error = orjson.loads(payload).get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = error.get("code")
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if status == 429:
        return RateLimitError(f"upstream: {message}", retry_after_seconds=1.0)
    if status in _RELAYED_STATUSES:
        return UpstreamRejectedError(status, message, str(code) if code else None)
    log.warning("upstream error %s: %s", status, message)
    return UpstreamError(f"upstream failed with HTTP {status}")
