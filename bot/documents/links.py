"""The web page a message links to, fetched for memory (memory.fetch_links; off by default).

A link someone posts is an address the bot would visit on their behalf from inside the
operator's network: the classic server-side request forgery. So:
- only http:// and https://, no credentials in the URL, no proxy from the environment;
- only public addresses: every address a name resolves to is checked when the connection is
  made (so a name that resolves to 127.0.0.1, 10.x, 169.254.169.254, or re-resolves to one
  later, is refused), and an address written as the host is checked before the request;
- redirects are followed by hand, at most MAX_REDIRECTS, each hop checked the same way;
- at most documents.link_max_bytes, within documents.link_timeout seconds in all.
`documents.unsafe_links_to_loopback` lets the tests fetch from 127.0.0.1 (and only that).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.core.config import DocumentsConfig

MAX_REDIRECTS = 5
_URL = re.compile(r"""https?://[^\s<>"'`)\]}]+""", re.IGNORECASE)
_TRAILING = ".,;:!?"


class LinkRefused(Exception):
    """The link is not fetched (an address or scheme not allowed, too big, an HTTP error)."""


@dataclass(frozen=True, slots=True)
class Page:
    url: str
    """Where it was found, after redirects."""
    data: bytes
    mimetype: str | None


def first_link(text: str) -> str | None:
    """The first http(s) link in a message's text, without the punctuation around it."""
    match = _URL.search(text)
    return match.group(0).rstrip(_TRAILING) if match else None


def allowed_address(address: str, *, loopback: bool = False) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if loopback and ip.is_loopback:
        return True
    return ip.is_global and not ip.is_multicast


class _PublicOnly(AbstractResolver):
    """Names resolved as usual, and refused if any address they give is not public."""

    def __init__(self, *, loopback: bool) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._loopback = loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not allowed_address(result["host"], loopback=self._loopback):
                raise LinkRefused(f"{host} resolves to {result['host']}, not a public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def _check_url(url: str, *, loopback: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise LinkRefused(f"only http(s) links are read, not {parts.scheme or 'this'}")
    if parts.username or parts.password:
        raise LinkRefused("links with a user name or password are not read")
    host = parts.hostname
    if not host:
        raise LinkRefused("the link has no host")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: checked as it is resolved
    if not allowed_address(host, loopback=loopback):
        raise LinkRefused(f"{host} is not a public address")


async def fetch(url: str, settings: DocumentsConfig) -> Page:
    """The page at `url`, or LinkRefused saying why not."""
    loopback = settings.unsafe_links_to_loopback
    connector = aiohttp.TCPConnector(resolver=_PublicOnly(loopback=loopback), use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=settings.link_timeout)
    headers = {"User-Agent": "Doryo/0.1 (reads links shared in a team chat)"}
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=timeout, headers=headers, trust_env=False
            ) as session,
            asyncio.timeout(settings.link_timeout),
        ):
            for _ in range(MAX_REDIRECTS + 1):
                _check_url(url, loopback=loopback)
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise LinkRefused(f"HTTP {response.status} without a Location")
                        url = urljoin(url, location)
                        continue
                    if response.status != 200:
                        raise LinkRefused(f"the site answered HTTP {response.status}")
                    data = await _read_capped(response, settings.link_max_bytes)
                    return Page(url, data, response.content_type or None)
            raise LinkRefused(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError:
        raise LinkRefused(f"the site took longer than {settings.link_timeout:g} s") from None
    except aiohttp.ClientConnectorError as e:
        raise LinkRefused(f"the site could not be reached ({e.os_error})") from None
    except aiohttp.ClientError as e:
        raise LinkRefused(f"the site could not be read ({type(e).__name__})") from None


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if (response.content_length or 0) > limit:
        raise LinkRefused(f"the page is larger than {limit:,} bytes")
    chunks = []
    total = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise LinkRefused(f"the page is larger than {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
