"""A team's data is the team's: a workspace exported with `doryo export`, read back with
`doryo import` into another database, answers the same; an export holds nothing of another
workspace; no workspace table is forgotten."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from bot.config import Config, write_config
from bot.data.portable import LEFT_OUT, RECORDS, VECTORS
from bot.memory import LocalEmbedder
from tests.conftest import Homeserver, running_bot
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import ANSWER_KEY, final_answer
from tests.integration.test_agent import FACT, indexed, team_with_fact
from tests.integration.workspace_helpers import new_team, start_session
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
    from bot import db

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
