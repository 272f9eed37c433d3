"""Links are fetched like a careful person would from inside someone's network: public
addresses only — checked after DNS and on every redirect — http(s) only, size and time bounded.
Against a real HTTP server on 127.0.0.1 (which the test-only setting allows, and nothing else)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.core.config import DocumentsConfig
from bot.documents.links import LinkRefused, allowed_address, fetch, first_link

LOOPBACK_OK = DocumentsConfig(
    unsafe_links_to_loopback=True, link_max_bytes=100_000, link_timeout=2
)
STRICT = DocumentsConfig()


@pytest.fixture
async def site() -> AsyncIterator[str]:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<h1>Venue</h1><p>Porto.</p>", content_type="text/html")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(50):
                await response.write(b"x" * 10_000)
        except ConnectionError:
            pass
        return response

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    def redirect(to: str):  # type: ignore[no-untyped-def]
        async def handler(_: web.Request) -> web.Response:
            raise web.HTTPFound(to)

        return handler

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/to-page", redirect("/page"))
    app.router.add_get("/to-private", redirect("http://10.1.2.3/admin"))
    app.router.add_get("/to-metadata", redirect("http://169.254.169.254/latest/meta-data"))
    app.router.add_get("/to-file", redirect("file:///etc/passwd"))
    app.router.add_get("/loop", redirect("/loop"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_page_is_fetched_and_redirects_followed(site: str) -> None:
    page = await fetch(f"http://{site}/to-page", LOOPBACK_OK)
    assert page.url.endswith("/page") and page.mimetype == "text/html"
    assert b"Porto" in page.data
    assert (
        b"Porto" in (await fetch(f"http://localhost:{site.split(':')[1]}/page", LOOPBACK_OK)).data
    )


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/to-private", "10.1.2.3 is not a public address"),
        ("/to-metadata", "169.254.169.254 is not a public address"),
        ("/to-file", "only http(s) links"),
        ("/loop", "more than 5 redirects"),
        ("/big", "larger than 100,000 bytes"),
        ("/slow", "longer than 2 s"),
    ],
)
async def test_what_is_not_fetched(site: str, path: str, why: str) -> None:
    with pytest.raises(LinkRefused, match=re.escape(why)):
        await fetch(f"http://{site}{path}", LOOPBACK_OK)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://{site}/page", "127.0.0.1 is not a public address"),
        ("http://localhost:{port}/page", "localhost resolves to 127.0.0.1"),
        ("http://[::ffff:127.0.0.1]:{port}/page", "not a public address"),
        ("http://[::1]:{port}/page", "not a public address"),
        ("http://user:secret@{site}/page", "user name or password"),
        ("ftp://{site}/page", "only http(s) links"),
    ],
)
async def test_without_the_test_setting_nothing_local_is_fetched(
    site: str, url: str, why: str
) -> None:
    port = site.split(":")[1]
    with pytest.raises(LinkRefused, match=re.escape(why)):
        await fetch(url.format(site=site, port=port), STRICT)


def test_public_means_public() -> None:
    assert allowed_address("93.184.215.14") and allowed_address("2606:4700::1111")
    for private in (
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "127.0.0.1",
        "0.0.0.0",
        "::1",
        "fc00::1",
        "fe80::1",
        "224.0.0.1",
        "::ffff:10.0.0.1",
        "not an address",
    ):
        assert not allowed_address(private), private
    assert allowed_address("127.0.0.1", loopback=True) and not allowed_address(
        "10.0.0.1", loopback=True
    )


def test_the_first_link_of_a_message() -> None:
    assert (
        first_link(
            "see https://example.org/spec.",
        )
        == "https://example.org/spec"
    )
    assert (
        first_link("(http://a.example/x?y=1), and https://b.example") == "http://a.example/x?y=1"
    )
    assert first_link("no link here, nor file:///etc/passwd") is None
