"""A team's data is the team's: a workspace exported with `doryo export`, read back with
`doryo import` into another database, answers the same; an export holds nothing of another
workspace; no workspace table is forgotten."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.app import Doryo
from bot.core.config import Config, write_config
from bot.data.forget import KEPT, USER_COLUMNS
from bot.data.portable import LEFT_OUT, RECORDS, VECTORS
from bot.memory import LocalEmbedder
from tests.conftest import Homeserver, running_bot
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import ANSWER_KEY, final_answer
from tests.integration.test_actions import propose, react, team_with_member, wait_status
from tests.integration.test_agent import FACT, indexed, team_with_fact
from tests.integration.workspace_helpers import accept, command, new_team, start_session
from tests.poll import eventually


def config_file(config: Config, path: Path, database_url: str) -> Path:
    write_config(
        path,
        {
            "homeserver": {"address": config.homeserver.address, "domain": "localhost"},
            "appservice": {
                "port": config.appservice.port,
                "as_token": config.appservice.as_token.get_secret_value(),
                "hs_token": config.appservice.hs_token.get_secret_value(),
            },
            "database": {"url": database_url},
            "redis": {"url": config.redis.url.get_secret_value()},
            "data_dir": str(path.parent),
        },
    )
    return path


async def doryo(*args: str, status: int = 0) -> str:
    """Run the `doryo` command; its stderr (what it tells the operator)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == status, err.decode()
    return err.decode()


async def fresh_database(postgres: Any) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.get_uri())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return str(postgres.get_uri(name))


async def test_an_export_read_back_into_another_database_answers_the_same(
    homeserver: Homeserver,
    bot_config: Callable[..., Config],
    database_url: str,
    postgres: Any,
    local_embedder: LocalEmbedder,
    model_server: FakeOpenAI,
    tmp_path: Path,
) -> None:
    config = bot_config()
    export = tmp_path / "rocket.jsonl.gz"
    async with running_bot(config, local_embedder) as first:
        team, fact_event = await team_with_fact(homeserver, first, "Rocket")
        room = await start_session(team, "Questions")
        other = await new_team(homeserver, first, "Elsewhere")
        theirs = await start_session(other, "Private")
        secret = await other.alice.send_text(theirs, "Elsewhere's vault code is 7431.")
        model_server.script(Answer("Falcon launches on March 14 [1]."))
        question = await team.alice.send_text(room, "@ask when does Falcon launch?")
        _, before = await final_answer(team.alice, room, question)
        await indexed(first, secret)
        sessions_of_rocket = await first.ctx.sessions.of_workspace(team.workspace_id)
        source_file = tmp_path / "source.yaml"
        told = await doryo(
            "export",
            "-c",
            str(config_file(config, source_file, database_url)),
            "--workspace",
            team.workspace_id,
            "--out",
            str(export),
        )
        assert f"exported {team.workspace_id}" in told

    lines = [json.loads(line) for line in gzip.open(export, "rt", encoding="utf-8")]
    header, records = lines[0], lines[1:]
    assert header["type"] == "doryo_export" and header["format"] == 1
    assert {r["type"] for r in records} >= {"workspace", "member", "session", "message", "memory"}
    text = gzip.open(export, "rt", encoding="utf-8").read()
    # Row by row: nothing of the other workspace.
    assert other.workspace_id not in text and secret not in text and "7431" not in text
    rooms = {r["room_id"] for r in records if r["type"] == "session"}
    assert rooms == {s.room_id for s in sessions_of_rocket}
    for record in records:
        if record["type"] == "workspace":
            assert record["id"] == team.workspace_id
        if "workspace_id" in record:
            assert record["workspace_id"] == team.workspace_id, record
        if record["type"] == "message":
            assert record["room_id"] in rooms, record
    assert any(r["type"] == "memory" and r["text"] == FACT for r in records)
    assert not [r for r in records if r["type"] == "memory" and "embedding" in r]

    moved = await fresh_database(postgres)
    target_file = tmp_path / "target" / "target.yaml"
    target_file.parent.mkdir()
    told = await doryo("import", "-c", str(config_file(config, target_file, moved)), str(export))
    assert "imported" in told
    refused = await doryo("import", "-c", str(target_file), str(export), status=1)
    assert "is here already; nothing was imported" in refused

    async with running_bot(bot_config(database={"url": moved}), local_embedder) as second:
        assert second.ctx.memory is not None

        async def embedded() -> bool:
            left = await second.ctx.db.fetchval("SELECT count(*) FROM memory_unembedded")
            return bool(left == 0)

        await eventually(embedded, timeout=60)
        model_server.script(Answer("Falcon launches on March 14 [1]."))
        question = await team.alice.send_text(room, "@ask when does Falcon launch?")
        _, after = await final_answer(team.alice, room, question)
        assert after[ANSWER_KEY]["sources"] == before[ANSWER_KEY]["sources"] == [fact_event]
        assert await second.ctx.workspaces.get(other.workspace_id) is None


async def test_every_workspace_table_is_exported_or_left_out_on_purpose(
    database_url: str,
) -> None:
    """A table added later with a workspace in it must be exported, or said why not."""
    from bot.core import db

    pool = await db.connect(database_url, min_size=0, max_size=1)
    try:
        rows = await pool.fetch(
            """
            SELECT DISTINCT table_name FROM information_schema.columns
            WHERE table_schema = current_schema()
              AND (column_name = 'workspace_id' OR table_name = 'workspaces')
            """
        )
    finally:
        await pool.close()
    tables = {r["table_name"] for r in rows}
    covered = {r.table for r in RECORDS} | {VECTORS.table} | set(LEFT_OUT)
    assert tables - covered == set()


USER_COLUMN = re.compile(r"^(user_id|sender|author|host|recipient|assignee|direct_user|.*_by)$")


async def user_columns(db: Any) -> set[tuple[str, str]]:
    rows = await db.fetch(
        """
        SELECT c.table_name, c.column_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
          AND c.data_type = 'text'
        """
    )
    return {
        (r["table_name"], r["column_name"]) for r in rows if USER_COLUMN.match(r["column_name"])
    }


async def test_every_column_with_a_user_id_is_forgotten_or_kept_on_purpose(
    database_url: str,
) -> None:
    from bot.core import db

    pool = await db.connect(database_url, min_size=0, max_size=1)
    try:
        found = await user_columns(pool)
    finally:
        await pool.close()
    handled = {(t, c) for t, spec in USER_COLUMNS.items() for c in spec.columns} | set(KEPT)
    assert found - handled == set(), "say in bot/data/forget.py what forgetting does to these"
    assert handled - found == set(), "bot/data/forget.py names columns the schema lacks"


async def test_forgetting_a_person_leaves_no_trace_in_the_workspace(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    said = await bob.send_text(session, "My badge number is 55-1234, keep it handy.")
    await command(bob, session, "!remember Bob's parking spot is B12")
    model_server.script(Answer("Noted."))
    question = await bob.send_text(session, "@ask what is my badge number?")
    await final_answer(bob, session, question)
    card = await propose(bob, session, '@act create_task title="Bob errand"')
    await react(team.alice, session, card["event_id"], "✅")
    await wait_status(bob, session, card, "done")
    await indexed(bot, said)

    answer = await command(team.alice, team.dm, f"!ws forget {bob.user_id}")
    assert f"Forgot {bob.user_id}" in answer and "forgotten-" in answer
    alias = re.search(r"`(forgotten-[0-9a-f]{12})`", answer)[1]  # type: ignore[index]

    # Every column that can hold a user ID, in the workspace's rows: bob is in none.
    for table, column in await user_columns(bot.ctx.db):
        if (table, column) in KEPT:
            continue
        scope = USER_COLUMNS[table].scope
        left = await bot.ctx.db.fetchval(
            f"SELECT count(*) FROM {table} WHERE {scope} AND {column} = $2",
            team.workspace_id,
            bob.user_id,
        )
        assert left == 0, (table, column)
    texts = await bot.ctx.db.fetch(
        "SELECT text FROM memory_items WHERE workspace_id = $1", team.workspace_id
    )
    assert not [t for t in texts if "55-1234" in t["text"] or "B12" in t["text"]]
    body = await bot.ctx.db.fetchval("SELECT body FROM messages WHERE event_id = $1", said)
    assert body is None
    run = await bot.ctx.db.fetchrow(
        "SELECT requested_by, confirmed_by FROM tool_runs WHERE workspace_id = $1",
        team.workspace_id,
    )
    assert (run["requested_by"], run["confirmed_by"]) == (alias, team.alice.user_id)
    usage = await bot.ctx.db.fetchval(
        "SELECT count(*) FROM llm_usage WHERE workspace_id = $1 AND user_id = $2",
        team.workspace_id,
        alias,
    )
    assert usage >= 1  # costs still add up
    # The same person is the same pseudonym; only the host may do it.
    assert alias in await command(team.alice, team.dm, f"!ws forget {bob.user_id}")
    assert "Only the" in await command(bob, session, f"!ws forget {team.alice.user_id}")


async def test_forget_me_asks_first_then_forgets_everywhere(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    await command(bob, session, "!remember Bob likes green tea")
    other = await new_team(homeserver, bot, "Second")
    await command(other.alice, other.dm, f"!ws invite {bob.user_id}")
    await accept(bob, other.space)
    room = await start_session(other, "Chat")
    await accept(bob, room)
    await command(bob, room, "!remember Bob's desk is by the window")
    asked = await command(bob, session, "!forget me")
    assert "2 workspace(s)" in asked and "!forget me confirm" in asked
    items = "SELECT count(*) FROM memory_items WHERE author = $1"
    assert await bot.ctx.db.fetchval(items, bob.user_id) == 2  # nothing yet
    done = await command(bob, session, "!forget me confirm")
    assert "in 2 workspace(s)" in done and "2 memories" in done
    assert await bot.ctx.db.fetchval(items, bob.user_id) == 0
    texts = await bot.ctx.db.fetch(
        "SELECT body FROM messages WHERE body LIKE '%green tea%' OR body LIKE '%window%'"
    )
    assert texts == []


async def test_ws_export_sends_the_host_a_file_they_can_read(
    homeserver: Homeserver, bot: Doryo, monkeypatch: pytest.MonkeyPatch
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    await bob.send_text(session, "The launch is on March 14.")
    assert "Only the" in await command(bob, session, "!ws export")
    answer = await command(team.alice, session, "!ws export")
    assert "Exporting" in answer
    sent = await team.alice.wait_for(
        team.dm, lambda e: e.get("content", {}).get("msgtype") == "m.file", timeout=30
    )
    content = sent[0]["content"]
    assert content["info"]["mimetype"] == "application/gzip"
    server, media = content["url"].removeprefix("mxc://").split("/")
    url = f"{homeserver.url}/_matrix/client/v1/media/download/{server}/{media}"
    headers = {"Authorization": f"Bearer {team.alice.access_token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        assert response.status == 200
        data = await response.read()
    lines = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
    assert lines[0]["type"] == "doryo_export" and lines[0]["workspace_id"] == team.workspace_id
    assert any(r["type"] == "message" and r["body"] == "The launch is on March 14." for r in lines)

    # Over the homeserver's upload limit: what to run instead.
    async def small() -> int:
        return 100

    monkeypatch.setattr(bot.ctx.matrix, "upload_limit", small)
    event = await team.alice.send_text(session, "!ws export")

    async def said() -> bool:
        await team.alice.sync_once(timeout_ms=300)
        return any(
            "doryo export -c config.yaml" in str(e["content"].get("m.new_content", {}).get("body"))
            for e in team.alice.timeline[session]
        )

    await eventually(said, timeout=30)
    assert event
