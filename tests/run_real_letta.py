"""Runs the real Letta server (PyPI letta 0.16.8, in .venv-letta) for the tests, offline; run it
with .venv-letta's Python, which has Letta and its dependencies (Doryo's venv does not):

    LETTA_PG_URI=postgresql://postgres@localhost/letta?host=/socket/dir \\
    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 OPENAI_API_KEY=x \\
        .venv-letta/bin/python tests/run_real_letta.py --port 8283

tests/letta_real.py starts it. First it creates Letta's tables in the (empty) database: letta
0.16.8 on PyPI ships no Alembic migrations, so the schema comes from its SQLAlchemy models
(`create_all`), plus what the migrations would add and the models only expect: the `vector`
extension, and the sequence behind `messages.sequence_id` (the model declares a server default
it does not create). Then it serves the REST API with uvicorn on 127.0.0.1.

Doing both in one process imports Letta (~8 s) once. LETTA_PG_URI must be set before letta is
imported: its engine is made at import time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def create_schema(uri: str) -> None:
    from letta.orm import Base
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg2://" + uri.split("://", 1)[1])
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE SEQUENCE IF NOT EXISTS message_seq_id_seq"))
        conn.execute(
            text(
                "ALTER TABLE messages ALTER COLUMN sequence_id "
                "SET DEFAULT nextval('message_seq_id_seq')"
            )
        )
        conn.execute(text("ALTER SEQUENCE message_seq_id_seq OWNED BY messages.sequence_id"))
    engine.dispose()


def stay_offline() -> None:
    """What Letta would fetch from the internet at start-up, it gets nothing instead."""
    import nltk

    # The lifespan downloads NLTK's punkt_tab; offline that fails (or hangs on a slow resolver).
    nltk.download = lambda *args, **kwargs: False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--no-schema", action="store_true", help="the tables exist already")
    args = parser.parse_args()
    uri = os.environ.get("LETTA_PG_URI")
    if not uri:
        sys.exit("run_real_letta.py: set LETTA_PG_URI")
    started = time.monotonic()
    if not args.no_schema:
        create_schema(uri)
        print(
            f"run_real_letta.py: schema ready after {time.monotonic() - started:.1f} s", flush=True
        )
    stay_offline()
    import uvicorn
    from letta.server.rest_api.app import app

    print(f"run_real_letta.py: app imported at {time.monotonic() - started:.1f} s", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
