"""Documents on the real stack: a file posted through Synapse's media repository is read into the
workspace's memory, cited by name and place, listed, replaced, forgotten with its redaction —
and what cannot or may not be read gets one notice saying why."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bot.app import Doryo
from bot.documents.store import Document
from tests.client import MatrixClient, replies_to
from tests.conftest import Homeserver, running_bot
from tests.documents import docx, filler, pdf, scanned_pdf
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import final_answer
from tests.integration.test_actions import team_with_member
from tests.integration.test_catchup import chat_prompts
from tests.integration.workspace_helpers import command, new_team, start_session
from tests.poll import eventually

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def read(bot: Doryo, room: str, event_id: str, timeout: float = 60) -> Document:
    """The document once its reading is over (done or skipped)."""
    session = await bot.ctx.sessions.get(room)
    assert session is not None

    async def over() -> Document | None:
        document = await bot.ctx.documents.store.get(session.workspace_id, event_id)
        return (
            document if document is not None and document.status in ("done", "skipped") else None
        )

    return await eventually(over, timeout=timeout)


async def notice_about(person: MatrixClient, room: str, event_id: str, expect: str = "") -> str:
    """The bot's notice about a file (after its latest edit), once it holds `expect`."""

    async def found() -> str | None:
        await person.sync_once(timeout_ms=300)
        events = person.timeline.get(room, [])
        notice = next((e for e in events if replies_to(e) == event_id), None)
        if notice is None:
            return None
        body = str(notice["content"]["body"])
        for e in events:
            relates = e.get("content", {}).get("m.relates_to", {})
            if (
                relates.get("rel_type") == "m.replace"
                and relates.get("event_id") == notice["event_id"]
            ):
                body = str(e["content"]["m.new_content"]["body"])
        return body if expect in body else None

    return await eventually(found, timeout=30)


async def test_a_shared_pdf_and_docx_are_read_and_cited_by_name_and_place(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    pages = [
        filler(150, 1),
        filler(150, 2),
        "The launch budget is 42,000 euros. " + filler(60),
        filler(150, 4),
    ]
    spec = await team.alice.send_file(session, "spec.pdf", pdf(pages), PDF)
    plan = await bob.send_file(
        session,
        "plan.docx",
        docx([("Overview", filler(80)), ("Pricing", "Each seat costs 17 euros a month.")]),
        DOCX,
    )
    assert (await read(bot, session, spec)).status == "done"
    document = await read(bot, session, plan)
    assert (document.status, document.pages) == ("done", 2)

    model_server.script(Answer("The launch budget is 42,000 euros [1] [2] [3] [4] [5]."))
    question = await team.alice.send_text(session, "@ask What is the launch budget?")
    _, answer = await final_answer(team.alice, session, question)
    prompt = chat_prompts(model_server)[-1]
    assert "42,000 euros" in prompt
    assert "document «spec.pdf, p. 3», shared by alice" in prompt
    body = answer["body"]
    assert "spec.pdf, p. 3" in body, body
    assert f"/{spec}?" in body  # the citation links to the file's message

    model_server.script(Answer("Seats cost 17 euros [1] [2] [3]."))
    question = await bob.send_text(session, "@ask How much does a seat cost?")
    _, answer = await final_answer(bob, session, question)
    assert "plan.docx, p. 2, Pricing" in answer["body"], answer["body"]

    listing = await command(bob, session, "!docs")
    assert "spec.pdf" in listing and "plan.docx" in listing and "4 pages" in listing, listing

    # Redacting the file removes it from memory; its pieces are no longer found.
    await team.alice.request(
        "PUT", f"/v3/rooms/{quote(session)}/redact/{quote(spec)}/r1", {"reason": "old"}
    )

    async def gone() -> bool:
        found = await bot.ctx.db.fetchval(
            "SELECT count(*) FROM memory_items WHERE event_id = $1", spec
        )
        return (
            found == 0 and await bot.ctx.documents.store.get(document.workspace_id, spec) is None
        )

    await eventually(gone, timeout=20)
    assert "spec.pdf" not in await command(bob, session, "!docs")


async def test_what_cannot_be_read_gets_one_notice_saying_why(
    homeserver: Homeserver, bot_config: Any, local_embedder: Any
) -> None:
    config = bot_config(documents={"max_bytes": 200_000, "max_pages": 50})
    async with running_bot(config, local_embedder) as bot:
        team = await new_team(homeserver, bot)
        session = await start_session(team, "Files")
        alice = team.alice
        cases = {
            "big.pdf": (pdf([filler(50)]), 300_000, "over the 200 kB limit"),  # as claimed
            "liar.txt": (b"x " * 150_000, 10, "over the 200 kB limit"),  # claims 10 bytes
            "pages.pdf": (pdf([filler(20, n) for n in range(60)]), None, "60 pages"),
            "broken.pdf": (b"%PDF-1.7\n" + bytes(range(256)) * 20, None, "damaged"),
            "locked.pdf": (pdf(["secret plans"], password="pw"), None, "password-protected"),
            "scan.pdf": (scanned_pdf(3), None, "looks like a scan"),
            "tool.exe": (b"MZ\x90\x00" + bytes(500), None, "not application/x-msdownload"),
        }
        events = {}
        for name, (data, size, _) in cases.items():
            mimetype = (
                "application/x-msdownload"
                if name.endswith(".exe")
                else (PDF if name.endswith(".pdf") else "text/plain")
            )
            events[name] = await alice.send_file(session, name, data, mimetype, size=size)
        for name, (_, _, why) in cases.items():
            document = await read(bot, session, events[name])
            assert document.status == "skipped", name
            notice = await notice_about(alice, session, events[name])
            assert f"I did not read **{name}**" in notice and why in notice, (name, notice)
        # One notice each, never two (the bot is still running).
        await bot.idle(30)
        notices = [e for e in alice.timeline[session] if replies_to(e) in events.values()]
        assert len(notices) == len(cases)
        assert (
            await bot.ctx.db.fetchval("SELECT count(*) FROM memory_items WHERE kind = 'document'")
            == 0
        )
        assert "not read: it is password-protected" in await command(alice, session, "!docs")


async def test_an_outsider_in_a_session_adds_no_document(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team = await new_team(homeserver, bot)
    session = await start_session(team, "Open door")
    mallory = await homeserver.user("mallory")
    await team.alice.invite(session, mallory.user_id)
    await mallory.join(session)
    event = await mallory.send_file(
        session, "facts.md", b"# Facts\nThe CEO approved a 90% discount.", "text/markdown"
    )
    document = await read(bot, session, event)
    assert document.status == "skipped"
    assert "only members of the workspace" in await notice_about(mallory, session, event)
    assert (
        await bot.ctx.db.fetchval(
            "SELECT count(*) FROM memory_items WHERE event_id = $1 AND kind = 'document'", event
        )
        == 0
    )


async def test_a_new_version_replaces_its_sharers_old_one_and_nobody_elses(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    first = await bob.send_file(
        session, "notes.md", b"# Notes\nThe venue is Lisbon.", "text/markdown"
    )
    await read(bot, session, first)
    second = await bob.send_file(
        session, "notes.md", b"# Notes\nThe venue is Porto.", "text/markdown"
    )
    assert (await read(bot, session, second)).replaced == first
    assert await notice_about(bob, session, second, "replacing the earlier version")
    # A reply with a file of another name replaces what it answers, too.
    third = await bob.send_file(
        session,
        "notes-v3.md",
        b"# Notes\nThe venue is Faro.",
        "text/markdown",
        **{"m.relates_to": {"m.in_reply_to": {"event_id": second}}},
    )
    assert (await read(bot, session, third)).replaced == second
    # Someone else's file of the same name is kept beside it, not swapped for it (alice is the
    # host; carol, a member without power in the room, may not replace bob's).
    carol = await homeserver.user("carol")
    await command(team.alice, session, f"!ws invite {carol.user_id}")
    await carol.join(team.space)
    await carol.join(session)
    fourth = await carol.send_file(
        session, "notes-v3.md", b"# Notes\nThe venue is Mars.", "text/markdown"
    )
    assert (await read(bot, session, fourth)).replaced is None
    texts = [
        r["text"]
        for r in await bot.ctx.db.fetch(
            "SELECT text FROM memory_items WHERE kind = 'document' ORDER BY id"
        )
    ]
    assert [t for t in texts if "venue" in t] == [
        "Notes\nThe venue is Faro.",
        "Notes\nThe venue is Mars.",
    ]


async def test_forget_takes_a_document_and_only_its_sharer_or_the_host_may(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    event = await team.alice.send_file(
        session, "budget.csv", b"item,cost\nvenue,900\ncatering,400\n", "text/csv"
    )
    document = await read(bot, session, event)
    assert document.status == "done" and document.pieces == 1
    assert "Only the host" in await command(bob, session, f"!forget d{document.id}")
    assert "Forgot the document **budget.csv**" in await command(
        team.alice, session, f"!forget d{document.id}"
    )
    assert (
        await bot.ctx.db.fetchval(
            "SELECT count(*) FROM memory_items WHERE event_id = $1 AND kind = 'document'", event
        )
        == 0
    )
    assert "no document `d" in await command(team.alice, session, f"!forget d{document.id}")


async def test_a_reading_cut_short_is_finished_at_the_next_start_under_one_notice(
    homeserver: Homeserver, bot_config: Any, local_embedder: Any, database_url: str
) -> None:
    from bot.core import db

    config = bot_config(documents={"progress_pages": 2})
    async with running_bot(config, local_embedder) as bot:
        team = await new_team(homeserver, bot)
        session = await start_session(team, "Long")
        pages = [f"Chapter {n}. " + filler(120, n) for n in range(3)]
        event = await team.alice.send_file(session, "long.pdf", pdf(pages), PDF)
        first = await read(bot, session, event)
        assert first.status == "done" and first.notice_event_id is not None
        assert await notice_about(team.alice, session, event, "Read **long.pdf** (3 pages)")
    # What a crash after the notice and before the pieces were stored leaves behind.
    pool = await db.connect(database_url, min_size=0, max_size=1)
    try:
        await pool.execute("UPDATE documents SET status = 'reading' WHERE event_id = $1", event)
        await pool.execute(
            "DELETE FROM memory_items WHERE event_id = $1 AND kind = 'document'", event
        )
    finally:
        await pool.close()
    async with running_bot(config, local_embedder) as bot:
        again = await read(bot, session, event)
        assert (again.status, again.attempts, again.pieces) == ("done", 2, 3)
        assert again.notice_event_id == first.notice_event_id
        await team.alice.sync_once()
        notices = [e for e in team.alice.timeline[session] if replies_to(e) == event]
        assert len(notices) == 1, notices


async def test_links_are_read_only_when_turned_on_and_only_from_allowed_addresses(
    homeserver: Homeserver, bot_config: Any, local_embedder: Any, model_server: FakeOpenAI
) -> None:
    from aiohttp import web

    async def venue(_: web.Request) -> web.Response:
        body = "<html><h1>Offsite</h1><p>The offsite is at Quinta da Pacheca, 12 May.</p></html>"
        return web.Response(text=body, content_type="text/html")

    async def to_private(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://192.168.1.1/router")

    app = web.Application()
    app.router.add_get("/offsite", venue)
    app.router.add_get("/go", to_private)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        # Off (the default): a link is a message like any other, nothing is fetched.
        async with running_bot(bot_config(), local_embedder) as bot:
            team = await new_team(homeserver, bot)
            session = await start_session(team, "Links")
            event = await team.alice.send_text(session, f"see http://127.0.0.1:{port}/offsite")
            await bot.idle(30)
            await bot.ctx.documents.idle(30)
            assert await bot.ctx.documents.store.get("", event) is None
            assert await bot.ctx.db.fetchval("SELECT count(*) FROM documents") == 0
        config = bot_config(
            memory={"fetch_links": True}, documents={"unsafe_links_to_loopback": True}
        )
        async with running_bot(config, local_embedder) as bot:
            page = await team.alice.send_text(
                session, f"Details of the offsite: http://127.0.0.1:{port}/offsite."
            )
            assert (await read(bot, session, page)).status == "done"
            private = await team.alice.send_text(session, f"and http://127.0.0.1:{port}/go")
            refused = await read(bot, session, private)
            assert refused.status == "skipped"
            assert refused.reason == "192.168.1.1 is not a public address."
            model_server.script(Answer("At Quinta da Pacheca [1] [2] [3]."))
            question = await team.alice.send_text(session, "@ask Where is the offsite?")
            _, answer = await final_answer(team.alice, session, question)
            assert "127.0.0.1/offsite, Offsite" in answer["body"], answer["body"]
            assert "Quinta da Pacheca" in chat_prompts(model_server)[-1]
            # A link that was not read is listed, not announced.
            await team.alice.sync_once()
            assert not [e for e in team.alice.timeline[session] if replies_to(e) == private]
            assert "192.168.1.1 is not a public address" in await command(
                team.alice, session, "!docs"
            )
    finally:
        await runner.cleanup()


async def test_a_pictures_caption_is_remembered_and_its_file_name_is_not(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team = await new_team(homeserver, bot)
    session = await start_session(team, "Photos")
    mxc = await team.alice.upload(b"\x89PNG\r\n\x1a\n" + bytes(64), "board.png", "image/png")
    image = {"msgtype": "m.image", "url": mxc, "info": {"mimetype": "image/png", "size": 72}}
    captioned = await team.alice.send(
        session,
        "m.room.message",
        {**image, "body": "The whiteboard: launch moved to June 3", "filename": "board.png"},
    )
    bare = await team.alice.send(session, "m.room.message", {**image, "body": "IMG_2041.png"})
    await bot.idle(30)
    assert bot.ctx.memory is not None
    await bot.ctx.memory.indexer.flush(30)
    rows = await bot.ctx.db.fetch(
        "SELECT event_id, text, kind FROM memory_items WHERE event_id = ANY($1::text[])",
        [captioned, bare],
    )
    assert [(r["event_id"], r["text"], r["kind"]) for r in rows] == [
        (captioned, "The whiteboard: launch moved to June 3", "message")
    ]
    # Neither is a document: a picture's pixels are not read, and nobody is told otherwise.
    assert await bot.ctx.db.fetchval("SELECT count(*) FROM documents") == 0


async def test_editing_a_files_message_keeps_the_document(
    homeserver: Homeserver, bot: Doryo
) -> None:
    """Element lets people edit a file's caption: the edit is the message's new text, not the
    document's (whose pieces would otherwise all become the caption)."""
    team = await new_team(homeserver, bot)
    session = await start_session(team, "Edits")
    event = await team.alice.send_file(
        session, "terms.md", b"# Terms\nPayment is due in 30 days.", "text/markdown"
    )
    assert (await read(bot, session, event)).status == "done"
    await team.alice.send(
        session,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* the signed terms",
            "m.new_content": {"msgtype": "m.text", "body": "the signed terms"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": event},
        },
    )

    async def edited() -> bool:
        body = await bot.ctx.db.fetchval("SELECT body FROM messages WHERE event_id = $1", event)
        return body == "the signed terms"

    await eventually(edited, timeout=20)
    assert bot.ctx.memory is not None
    await bot.ctx.memory.indexer.flush(30)
    rows = await bot.ctx.db.fetch(
        "SELECT kind, text FROM memory_items WHERE event_id = $1 ORDER BY kind", event
    )
    assert [(r["kind"], r["text"]) for r in rows] == [
        ("document", "Terms\nPayment is due in 30 days."),
        ("message", "the signed terms"),
    ]
