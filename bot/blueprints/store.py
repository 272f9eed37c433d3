"""BlueprintStore: blueprints and their immutable versions in PostgreSQL.

- create: version 1. edit: a new version (the changes laid over the current spec). Nothing ever
  changes a version once written.
- rollback: the blueprint's current version points back at an earlier one (no new version); the
  next edit builds on what is current.
- `extends` is resolved when a version is written: the version keeps its parents as they were
  (`resolved`, and `extends_version`). A parent's later edits reach a child at its next version.
- Every version is validated first: types and ranges, no cycle through `extends`, models that
  the router resolves, tools in the known set. Errors are BlueprintError, naming each field.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg

from bot.blueprints.spec import (
    Blueprint,
    build,
    check_spec,
    merge,
    parse_yaml,
    spec_dict,
    validate_resolved,
)
from bot.core import strings
from bot.core.errors import BlueprintError

log = logging.getLogger(__name__)

Source = Literal["file", "command", "api"]

_COLUMNS = """
    v.code, v.version, v.spec, v.resolved, v.extends, v.extends_version, v.source,
    v.created_by, v.created_at, b.current_version
"""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One line of a blueprint's history."""

    version: int
    created_at: datetime
    created_by: str | None
    source: str
    extends: str | None
    extends_version: int | None
    current: bool


@dataclass(frozen=True, slots=True)
class Pin:
    """A change of the current version: create, edit or rollback."""

    version: int
    action: str
    pinned_by: str | None
    pinned_at: datetime


@dataclass(frozen=True, slots=True)
class LoadReport:
    created: tuple[str, ...]
    updated: tuple[str, ...]
    unchanged: tuple[str, ...]


def _build(row: asyncpg.Record) -> Blueprint:
    return build(dict(row), current=row["version"] == row["current_version"])


class BlueprintStore:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        resolve_model: Callable[[str], object],
        known_tools: Collection[str] | Callable[[], Collection[str]],
        letta_enabled: bool = False,
    ) -> None:
        """`resolve_model`: the router's resolve (raises UnknownModel); `known_tools`: names of
        the tools a blueprint may list, or a function giving them at each check (the tool
        registry's `names`); `letta_enabled`: a Letta server is configured (letta.base_url), so
        blueprints may say `backend: letta`."""
        self._pool = pool
        self._letta_enabled = letta_enabled
        self._resolve_model = resolve_model
        self._known_tools = known_tools

    @property
    def known_tools(self) -> Collection[str]:
        known = self._known_tools
        return known() if callable(known) else known

    # --- reading -------------------------------------------------------------------------

    async def find(self, code: str, version: int | None = None) -> Blueprint | None:
        row = await self._pool.fetchrow(
            f"""
            SELECT {_COLUMNS}
            FROM blueprints b JOIN blueprint_versions v ON v.code = b.code
            WHERE b.code = $1 AND v.version = coalesce($2, b.current_version)
            """,
            code,
            version,
        )
        return _build(row) if row else None

    async def get(self, code: str, version: int | None = None) -> Blueprint:
        """The current version, or the one asked for. Raises BlueprintError if missing."""
        found = await self.find(code, version)
        if found is not None:
            return found
        latest = await self._pool.fetchval(
            "SELECT max(version) FROM blueprint_versions WHERE code = $1", code
        )
        if latest is None:
            raise BlueprintError(strings.BLUEPRINT_NOT_FOUND.format(code=code))
        raise BlueprintError(
            strings.BLUEPRINT_NO_VERSION.format(code=code, version=version, latest=latest)
        )

    async def list(self) -> list[Blueprint]:
        """The current version of every blueprint, by code."""
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS}
            FROM blueprints b
            JOIN blueprint_versions v ON v.code = b.code AND v.version = b.current_version
            ORDER BY b.code
            """
        )
        return [_build(r) for r in rows]

    async def history(self, code: str) -> builtins.list[VersionInfo]:
        """Every version, newest first."""
        rows = await self._pool.fetch(
            """
            SELECT v.version, v.created_at, v.created_by, v.source, v.extends, v.extends_version,
                   v.version = b.current_version AS current
            FROM blueprint_versions v JOIN blueprints b ON b.code = v.code
            WHERE v.code = $1
            ORDER BY v.version DESC
            """,
            code,
        )
        if not rows:
            raise BlueprintError(strings.BLUEPRINT_NOT_FOUND.format(code=code))
        return [VersionInfo(**dict(r)) for r in rows]

    async def pins(self, code: str) -> builtins.list[Pin]:
        """Changes of the current version, newest first."""
        rows = await self._pool.fetch(
            """
            SELECT version, action, pinned_by, pinned_at FROM blueprint_pins
            WHERE code = $1 ORDER BY id DESC
            """,
            code,
        )
        return [Pin(**dict(r)) for r in rows]

    # --- writing -------------------------------------------------------------------------

    async def create(
        self, spec: Mapping[str, Any], *, source: Source = "command", by: str | None = None
    ) -> Blueprint:
        """Version 1 of a new blueprint."""
        checked = spec_dict(check_spec(spec))
        async with self._pool.acquire() as conn, conn.transaction():
            code = checked["code"]
            await _lock_code(conn, code)
            exists = await conn.fetchval("SELECT 1 FROM blueprints WHERE code = $1", code)
            if exists:
                raise BlueprintError(strings.BLUEPRINT_EXISTS.format(code=code))
            await self._write(conn, checked, version=1, source=source, by=by, file_sha=None)
        return await self.get(code)

    async def edit(
        self,
        code: str,
        changes: Mapping[str, Any],
        *,
        replace: bool = False,
        source: Source = "command",
        by: str | None = None,
    ) -> Blueprint:
        """A new version: `changes` laid over the current spec (a key set to null removes it),
        or with `replace` the whole spec."""
        if changes.get("code") not in (None, code):
            raise BlueprintError(strings.BLUEPRINT_CODE_CHANGE.format(code=code))
        async with self._pool.acquire() as conn, conn.transaction():
            current = await self._lock(conn, code)
            base = {} if replace else dict(current["spec"])
            for key, value in changes.items():
                if value is None:
                    base.pop(key, None)
                else:
                    base[key] = value
            base["code"] = code
            checked = spec_dict(check_spec(base))
            if checked != current["spec"]:
                version = await self._next_version(conn, code)
                await self._write(
                    conn, checked, version=version, source=source, by=by, file_sha=None
                )
        return await self.get(code)

    async def rollback(self, code: str, version: int, *, by: str | None = None) -> Blueprint:
        """Make an earlier version current again."""
        async with self._pool.acquire() as conn, conn.transaction():
            current = await self._lock(conn, code)
            exists = await conn.fetchval(
                "SELECT 1 FROM blueprint_versions WHERE code = $1 AND version = $2", code, version
            )
            if not exists:
                latest = await self._next_version(conn, code) - 1
                raise BlueprintError(
                    strings.BLUEPRINT_NO_VERSION.format(code=code, version=version, latest=latest)
                )
            if current["current_version"] != version:
                await conn.execute(
                    """
                    UPDATE blueprints SET current_version = $2, updated_at = now()
                    WHERE code = $1
                    """,
                    code,
                    version,
                )
                await self._pin(conn, code, version, "rollback", by)
        return await self.get(code)

    async def load_directory(self, directory: Path) -> LoadReport:
        """Load blueprints/*.yaml: new codes are created; a file that changed since it was last
        loaded makes a new version; an unchanged file changes nothing (so edits made with
        commands since are kept). Parents are loaded before the blueprints that extend them."""
        files = await asyncio.to_thread(_read_directory, directory)
        created: builtins.list[str] = []
        updated: builtins.list[str] = []
        unchanged: builtins.list[str] = []
        for code in _parents_first(files):
            spec, sha, path = files[code]
            async with self._pool.acquire() as conn, conn.transaction():
                await _lock_code(conn, code)  # two processes starting at once load it once
                exists = await conn.fetchval("SELECT 1 FROM blueprints WHERE code = $1", code)
                last_sha = await conn.fetchval(
                    """
                    SELECT file_sha256 FROM blueprint_versions
                    WHERE code = $1 AND source = 'file' ORDER BY version DESC LIMIT 1
                    """,
                    code,
                )
                if exists and last_sha == sha:
                    unchanged.append(code)
                    continue
                version = await self._next_version(conn, code) if exists else 1
                try:
                    await self._write(
                        conn, spec, version=version, source="file", by=None, file_sha=sha
                    )
                except BlueprintError as e:
                    raise BlueprintError(f"{path.name}: {e}", e.fields) from None
                (updated if exists else created).append(code)
        if created or updated:
            log.info(
                "blueprints loaded from %s: %d new, %d updated",
                directory,
                len(created),
                len(updated),
            )
        return LoadReport(tuple(created), tuple(updated), tuple(unchanged))

    # --- internals -----------------------------------------------------------------------

    async def _lock(self, conn: asyncpg.Connection, code: str) -> asyncpg.Record:
        row = await conn.fetchrow(
            """
            SELECT b.current_version, v.spec
            FROM blueprints b
            JOIN blueprint_versions v ON v.code = b.code AND v.version = b.current_version
            WHERE b.code = $1
            FOR UPDATE OF b
            """,
            code,
        )
        if row is None:
            raise BlueprintError(strings.BLUEPRINT_NOT_FOUND.format(code=code))
        return row

    async def _next_version(self, conn: asyncpg.Connection, code: str) -> int:
        latest = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM blueprint_versions WHERE code = $1", code
        )
        return int(latest) + 1

    async def _resolve(
        self, conn: asyncpg.Connection, spec: Mapping[str, Any]
    ) -> tuple[dict[str, Any], int | None]:
        """The spec with its `extends` chain merged in, and the parent's current version."""
        code = spec["code"]
        chain = [spec]
        seen = [code]
        parent_version: int | None = None
        parent = spec.get("extends")
        while parent:
            if parent in seen:
                cycle = " → ".join([*seen, parent])
                raise _extends_error(code, strings.BLUEPRINT_CYCLE.format(chain=cycle))
            row = await conn.fetchrow(
                """
                SELECT v.spec, v.version
                FROM blueprints b
                JOIN blueprint_versions v ON v.code = b.code AND v.version = b.current_version
                WHERE b.code = $1
                """,
                parent,
            )
            if row is None:
                raise _extends_error(code, strings.BLUEPRINT_NO_PARENT.format(parent=parent))
            if parent_version is None:
                parent_version = int(row["version"])
            chain.append(row["spec"])
            seen.append(parent)
            parent = row["spec"].get("extends")
        resolved: dict[str, Any] = {}
        for item in reversed(chain):
            resolved = merge(resolved, item)
        resolved["code"] = code
        return resolved, parent_version

    async def _write(
        self,
        conn: asyncpg.Connection,
        spec: dict[str, Any],
        *,
        version: int,
        source: Source,
        by: str | None,
        file_sha: str | None,
    ) -> None:
        code = spec["code"]
        resolved, parent_version = await self._resolve(conn, spec)
        validate_resolved(
            code,
            resolved,
            resolve_model=self._resolve_model,
            known_tools=self.known_tools,
            letta_enabled=self._letta_enabled,
        )
        await conn.execute(
            """
            INSERT INTO blueprint_versions (code, version, spec, resolved, extends,
                                            extends_version, source, file_sha256, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            code,
            version,
            spec,
            resolved,
            spec.get("extends"),
            parent_version,
            source,
            file_sha,
            by,
        )
        await conn.execute(
            """
            INSERT INTO blueprints (code, current_version) VALUES ($1, $2)
            ON CONFLICT (code) DO UPDATE SET current_version = $2, updated_at = now()
            """,
            code,
            version,
        )
        await self._pin(conn, code, version, "create" if version == 1 else "edit", by)

    async def _pin(
        self, conn: asyncpg.Connection, code: str, version: int, action: str, by: str | None
    ) -> None:
        await conn.execute(
            """
            INSERT INTO blueprint_pins (code, version, action, pinned_by)
            VALUES ($1, $2, $3, $4)
            """,
            code,
            version,
            action,
            by,
        )


async def _lock_code(conn: asyncpg.Connection, code: str) -> None:
    """Serialize writers of one code, including the creation of one that does not exist yet
    (a row lock needs a row); released at the end of the transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('doryo.blueprint:' || $1))", code)


_Files = dict[str, tuple[dict[str, Any], str, Path]]


def _read_directory(directory: Path) -> _Files:
    """code → (checked spec, the file's sha256, path) for every *.yaml and *.yml file."""
    files: _Files = {}
    for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        text = path.read_text(encoding="utf-8")
        try:
            spec = spec_dict(check_spec(parse_yaml(text)))
        except BlueprintError as e:
            raise BlueprintError(f"{path.name}: {e}", e.fields) from None
        if spec["code"] in files:
            other = files[spec["code"]][2].name
            raise BlueprintError(
                strings.BLUEPRINT_DUPLICATE_FILE.format(
                    code=spec["code"], first=other, second=path.name
                )
            )
        files[spec["code"]] = (spec, hashlib.sha256(text.encode()).hexdigest(), path)
    return files


def _parents_first(files: _Files) -> list[str]:
    """Codes ordered so that a parent defined in the same directory comes before its children.
    A cycle among the files is an error naming it."""
    ordered: list[str] = []
    visiting: list[str] = []

    def visit(code: str) -> None:
        if code in ordered:
            return
        if code in visiting:
            cycle = " → ".join([*visiting[visiting.index(code) :], code])
            raise _extends_error(code, strings.BLUEPRINT_CYCLE.format(chain=cycle))
        visiting.append(code)
        parent = files[code][0].get("extends")
        if isinstance(parent, str) and parent in files:
            visit(parent)
        visiting.pop()
        ordered.append(code)

    for code in sorted(files):
        visit(code)
    return ordered


def _extends_error(code: str, problem: str) -> BlueprintError:
    return BlueprintError(
        strings.BLUEPRINT_INVALID.format(
            code=code, problems=strings.BLUEPRINT_PROBLEM.format(field="extends", problem=problem)
        ),
        ["extends"],
    )
