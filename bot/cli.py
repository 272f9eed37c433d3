"""The `doryo` command: dev, registration, migrate, run, reindex, export, import, forget
(docs/spec.md §1).

Exit codes: 0 fine, 1 a failure at run time (database down, port taken, ...), 2 bad configuration
or usage. Errors are one clear line (or one per bad key) on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ruamel.yaml import YAML

from bot.core import log as logs
from bot.core.config import Config, generate_tokens, load_config
from bot.core.errors import ConfigError, DoryoError

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doryo", description="An AI colleague inside Matrix.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run Synapse, PostgreSQL, Redis and the bot locally")
    dev.add_argument("--data-dir", type=Path, default=Path("data"), help="where state is kept")
    dev.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="a Redis to use if it answers; otherwise a private redis-server is started",
    )

    reg = sub.add_parser("registration", help="write the appservice registration file")
    reg.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    reg.add_argument("-o", "--output", type=Path, default=Path("registration.yaml"))

    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))

    run = sub.add_parser("run", help="run the appservice")
    run.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    run.add_argument(
        "--role",
        choices=("all", "receiver", "worker", "embedder"),
        default="all",
        help="receiver: take the homeserver's transactions; worker: handle events (any number,"
        " on one database); all: both, in this process; embedder: serve the local embedding"
        " model to the others (docs/deployment.md)",
    )
    run.add_argument(
        "--port",
        type=int,
        help="where this process listens (default: appservice.port; a worker: the next port,"
        " for /health, /ready and /metrics; an embedder: the one after)",
    )

    rei = sub.add_parser(
        "reindex", help="re-embed the workspace memory with the configured embedding model"
    )
    rei.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    rei.add_argument("--batch-size", type=int, default=256, help="texts embedded at a time")

    exp = sub.add_parser("export", help="write a workspace as JSON lines (docs/export.md)")
    exp.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    exp.add_argument("--workspace", required=True, help="the workspace's ID (ws_…)")
    exp.add_argument("--out", type=Path, help="the file (.gz: compressed); default stdout")
    exp.add_argument("--with-vectors", action="store_true", help="include memory vectors")

    imp = sub.add_parser("import", help="read a workspace export into this database")
    imp.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    imp.add_argument("file", type=Path, help="an export (.gz: compressed)")

    fgt = sub.add_parser("forget", help="forget what a person said (docs/behaviour.md)")
    fgt.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    fgt.add_argument("user", help="their user ID, @name:server")
    fgt.add_argument("--workspace", help="only in this workspace (default: every workspace)")
    return parser


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8")


async def _database(config: Config) -> asyncpg.Connection:
    import asyncpg

    from bot.core import db
    from bot.core.embedded_pg import start_embedded

    url = config.database.url
    if url == "embedded":
        url, _ = await start_embedded(config.data_dir / "postgres")
    pool = await db.connect(url, min_size=0, max_size=1)  # migrations applied
    await pool.close()
    return await asyncpg.connect(url)


async def _export(config: Config, workspace: str, out: Path | None, with_vectors: bool) -> None:
    from bot.data.portable import export_to

    conn = await _database(config)
    try:
        if out is None:
            counts = await export_to(conn, workspace, sys.stdout, with_vectors=with_vectors)
        else:
            with _open_text(out, "w") as file:
                counts = await export_to(conn, workspace, file, with_vectors=with_vectors)
    finally:
        await conn.close()
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    print(f"exported {workspace}: {summary}", file=sys.stderr)


async def _forget(config: Config, user: str, workspace: str | None) -> None:
    from bot.data.forget import forget_in_workspace, workspaces_of

    if not (user.startswith("@") and ":" in user):
        raise DoryoError(f"{user} is not a user ID (write it like @alice:example.org)")
    conn = await _database(config)
    secret = config.appservice.as_token.get_secret_value()
    try:
        for workspace_id in [workspace] if workspace else await workspaces_of(conn, user):
            done = await forget_in_workspace(conn, workspace_id, user, secret=secret)
            print(
                f"{workspace_id}: the text of {done.messages} messages and {done.memories} "
                f"memories deleted, {done.records} records pseudonymised or deleted "
                f"({done.pseudonym})",
                file=sys.stderr,
            )
    finally:
        await conn.close()


async def _import(config: Config, path: Path) -> None:
    from bot.data.portable import import_from

    conn = await _database(config)
    try:
        with _open_text(path, "r") as file:
            counts = await import_from(conn, file)
    finally:
        await conn.close()
    summary = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"imported {path}: {summary}", file=sys.stderr)


def _write_registration(config_path: Path, output: Path) -> None:
    if generate_tokens(config_path):
        print(f"generated as_token and hs_token in {config_path}")
    config = load_config(config_path)
    yaml = YAML()
    with output.open("w", encoding="utf-8") as f:
        yaml.dump(config.registration(), f)
    output.chmod(0o600)
    print(f"wrote {output}: add it to app_service_config_files in homeserver.yaml, restart it")


async def _migrate(config: Config) -> None:
    from bot.core import db
    from bot.core.embedded_pg import start_embedded

    url = config.database.url
    if url == "embedded":
        url, _ = await start_embedded(config.data_dir / "postgres")
    pool = await db.connect(url, min_size=0, max_size=1)
    async with pool.acquire() as conn:
        version = await db.schema_version(conn)
    await pool.close()
    print(f"database schema at version {version}")


async def _reindex(config: Config, batch_size: int) -> None:
    from bot.core import db
    from bot.core.embedded_pg import start_embedded
    from bot.memory import MemoryStore, build_embedder, reindex

    embedder = build_embedder(config)
    url = config.database.url
    if url == "embedded":
        url, _ = await start_embedded(config.data_dir / "postgres")
    pool = await db.connect(url, min_size=0, max_size=2, command_timeout=None)  # long work
    step = max(batch_size * 20, 1000)

    def progress(done: int) -> None:
        if done % step < batch_size:
            print(f"re-embedded {done} items", flush=True)

    try:
        print(f"re-embedding the workspace memory with {embedder.model}", flush=True)
        result = await reindex(
            MemoryStore(pool),
            embedder,
            batch_size=batch_size,
            progress=progress,
            own_index_min=config.memory.exact_search_below,
        )
    finally:
        await pool.close()
        await embedder.aclose()
    print(
        f"memory re-embedded with {result.model} ({result.dims} dimensions): "
        f"{result.items} items in {result.seconds:.1f} s"
    )


async def _until_signalled(
    start: Callable[[], Awaitable[object]],
    stop: Callable[[], Awaitable[object]],
    gave_up: asyncio.Event | None = None,
) -> None:
    """Run from `start` until SIGINT/SIGTERM (or `gave_up` is set), then `stop`."""
    stopping = gave_up or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await start()
        await stopping.wait()
        log.info("stopping")
    finally:
        await stop()


async def _run(config: Config, role: str, port: int | None) -> None:
    from bot.app import Doryo

    doryo = Doryo(config, role=role, port=port)
    started = False

    async def start() -> None:
        nonlocal started
        await doryo.start()
        started = True

    async def stop() -> None:
        if started:
            await doryo.stop()

    await _until_signalled(start, stop, doryo.gave_up)
    if doryo.failure is not None:
        raise doryo.failure  # exit status 1


async def _run_embedder(config: Config, port: int | None) -> None:
    from bot.embedding_server import EmbeddingServer

    server = EmbeddingServer(config)

    async def start() -> None:
        await server.start(config.appservice.hostname, port or config.appservice.port + 2)

    await _until_signalled(start, server.stop)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup("INFO")
    try:
        if args.command == "dev":
            from bot.dev import run_dev

            asyncio.run(run_dev(args.data_dir.absolute(), args.redis_url))
        elif args.command == "registration":
            _write_registration(args.config, args.output)
        else:
            config = load_config(args.config)
            logs.setup(config.logging.level, config.logging.format)
            if args.command == "migrate":
                asyncio.run(_migrate(config))
            elif args.command == "reindex":
                asyncio.run(_reindex(config, args.batch_size))
            elif args.command == "export":
                asyncio.run(_export(config, args.workspace, args.out, args.with_vectors))
            elif args.command == "import":
                asyncio.run(_import(config, args.file))
            elif args.command == "forget":
                asyncio.run(_forget(config, args.user, args.workspace))
            else:
                if args.role == "embedder":
                    asyncio.run(_run_embedder(config, args.port))
                else:
                    asyncio.run(_run(config, args.role, args.port))
    except ConfigError as e:
        print(
            f"config error in {getattr(args, 'config', 'the dev config')}:\n{e}", file=sys.stderr
        )
        return 2
    except DoryoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
