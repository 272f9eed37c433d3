"""Every command of docs/spec.md §2, as data: names for the parser, syntax for !help and for
MSC4332.

A command is known here before it is implemented: the parser recognises it and the dispatcher
answers "not available yet" until a handler exists (see bot.commands.dispatch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Argument:
    name: str
    type: str  # an MSC4332 argument type: string, integer, boolean, enum, user_id, ...
    description: str
    variadic: bool = False
    enum: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    """The words that name it, lower case: "ping", "ws create"."""
    usage: str
    """The syntax shown to people, with the ! sigil."""
    summary: str
    who: str
    """Who may run it, as people read it: anyone, member, host, ..."""
    arguments: tuple[Argument, ...] = ()
    """Positional arguments, for the MSC4332 state event. The last may be variadic."""
    advertise: bool = True
    """Whether it is offered to MSC4332 clients (groups and aliases are not)."""

    @property
    def msc4332_syntax(self) -> str:
        names = [f"{{{a.name}}}" for a in self.arguments]
        return " ".join([self.name, *names])


def _arg(name: str, description: str, type_: str = "string", **kwargs: Any) -> Argument:
    return Argument(name, type_, description, **kwargs)


_TEXT = _arg("text", "Text")

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "ask",
        "!ask QUESTION",
        "Ask the agent; it answers from this session and the workspace's memory",
        "member",
        (_arg("question", "Your question"),),
    ),
    CommandSpec(
        "act",
        "!act INSTRUCTION  or  !act TOOL key=value …",
        "Propose an action; it runs after the host confirms",
        "member",
        (_arg("instruction", "What to do"),),
    ),
    CommandSpec(
        "help",
        "!help [COMMAND]",
        "The commands, with their syntax",
        "anyone",
        (_arg("command", "A command, e.g. ws"),),
    ),
    CommandSpec("ping", "!ping", "Check that the bot is there, and how fast", "anyone"),
    CommandSpec(
        "ws",
        "!ws create|invite|invites|join|members|delegate|undelegate|settings|use|export|forget"
        "|delete …",
        "Workspaces",
        "member",
        advertise=False,
    ),
    CommandSpec(
        "ws create",
        "!ws create NAME",
        "A new workspace (a space) that you host",
        "anyone",
        (_arg("name", "The workspace's name"),),
    ),
    CommandSpec(
        "ws invite",
        "!ws invite [@user …]",
        "Invite people, or get a one-time invite code",
        "host",
        (_arg("users", "People to invite", "user_id", variadic=True),),
    ),
    CommandSpec(
        "ws invites",
        "!ws invites [PAGE]  ·  !ws invite revoke CODE",
        "Open invite codes (uses left, expiry, who made them); end one",
        "host",
    ),
    CommandSpec(
        "ws join",
        "!ws join CODE",
        "Join a workspace with an invite code",
        "anyone",
        (_arg("code", "The invite code"),),
    ),
    CommandSpec("ws members", "!ws members [PAGE]", "Members and their roles", "host"),
    CommandSpec(
        "ws export",
        "!ws export",
        "The workspace's data as a file, sent to you in our direct chat (docs/export.md)",
        "host",
    ),
    CommandSpec(
        "ws forget",
        "!ws forget @user",
        "Forget what a person said in the workspace (docs/behaviour.md)",
        "host",
        (_arg("user", "Their user ID", "user_id"),),
    ),
    CommandSpec(
        "ws delete",
        "!ws delete [confirm|cancel]",
        "Delete the workspace's data, once you confirm with ✅ on its card; the rooms stay",
        "host",
        (
            _arg(
                "decision",
                "confirm or cancel a waiting request",
                "enum",
                enum=("confirm", "cancel"),
            ),
        ),
    ),
    CommandSpec(
        "ws delegate",
        "!ws delegate @user",
        "Let someone confirm actions",
        "host",
        (_arg("user", "Who", "user_id"),),
    ),
    CommandSpec(
        "ws undelegate",
        "!ws undelegate @user",
        "Take that back",
        "host",
        (_arg("user", "Who", "user_id"),),
    ),
    CommandSpec(
        "ws settings",
        "!ws settings [KEY VALUE]",
        "Workspace settings: agent, who may act, budget, memory retention, threads",
        "host",
    ),
    CommandSpec(
        "ws use",
        "!ws use NAME",
        "In a DM: pick the workspace your commands apply to",
        "member",
        (_arg("name", "The workspace's name"),),
    ),
    CommandSpec(
        "session",
        "!session start [TOPIC] | !session end | !session history",
        "Sessions",
        "member",
        advertise=False,
    ),
    CommandSpec(
        "session start",
        "!session start [TOPIC]",
        "A new session room in the workspace",
        "member",
        (_arg("topic", "What it is about"),),
    ),
    CommandSpec(
        "session end",
        "!session end",
        "End this session: summary, then read-only for the agent",
        "host",
    ),
    CommandSpec(
        "session history",
        "!session history",
        "In a room added to a workspace: let me read its earlier messages into memory",
        "room admin",
    ),
    CommandSpec("sessions", "!sessions [PAGE]", "Active and ended sessions", "member"),
    CommandSpec(
        "remember",
        "!remember TEXT",
        "Keep something in the workspace's long-term memory",
        "member",
        (_TEXT,),
    ),
    CommandSpec(
        "forget",
        "!forget ID  ·  !forget dN  ·  !forget me",
        "Remove a memory item, or a document (dN, from !docs); or everything you said, in "
        "every workspace",
        "host or author; anyone for themselves",
        (_arg("id", "The memory item's ID, a document's dN, or me"),),
    ),
    CommandSpec(
        "docs",
        "!docs",
        "Documents shared in the workspace's sessions and read into its memory",
        "member",
    ),
    CommandSpec(
        "memory",
        "!memory [QUERY]",
        "Search the workspace's memory",
        "member",
        (_arg("query", "What to look for"),),
    ),
    CommandSpec("tools", "!tools", "Tools this session's agent may use", "member"),
    CommandSpec(
        "tool",
        "!tool NAME",
        "One tool, with its arguments",
        "member",
        (_arg("name", "The tool's name"),),
    ),
    CommandSpec(
        "connect",
        "!connect TOOLKIT",
        "Link an external account (the link comes in a DM)",
        "member",
        (_arg("toolkit", "github, notion, googlesheets, …"),),
    ),
    CommandSpec("connections", "!connections", "Your linked accounts", "member"),
    CommandSpec(
        "disconnect",
        "!disconnect ID",
        "Unlink an account",
        "member",
        (_arg("id", "The connection's ID"),),
    ),
    CommandSpec("actions", "!actions [all] [PAGE]", "Proposed actions", "member"),
    CommandSpec(
        "confirm",
        "!confirm ID",
        "Confirm an action (like reacting ✅)",
        "host",
        (_arg("id", "The action's ID"),),
    ),
    CommandSpec(
        "cancel",
        "!cancel ID",
        "Cancel an action (like reacting ❌)",
        "host or requester",
        (_arg("id", "The action's ID"),),
    ),
    CommandSpec("tasks", "!tasks [PAGE]", "Tasks created by the agent or by people", "member"),
    CommandSpec("task", "!task done ID", "Tasks: mark one done", "member", advertise=False),
    CommandSpec(
        "task done", "!task done ID", "Mark a task done", "member", (_arg("id", "The task's ID"),)
    ),
    CommandSpec("agent", "!agent", "Which blueprint answers here", "member"),
    CommandSpec(
        "agent use",
        "!agent use CODE[@VERSION]",
        "Switch this session's blueprint",
        "host",
        (_arg("blueprint", "A blueprint code, optionally @version"),),
    ),
    CommandSpec(
        "blueprint",
        "!blueprint list|show|create|edit|history|rollback …",
        "Agent blueprints, versioned",
        "host",
        advertise=False,
    ),
    CommandSpec("blueprint list", "!blueprint list", "The blueprints", "host"),
    CommandSpec(
        "blueprint show",
        "!blueprint show CODE[@VERSION]",
        "One blueprint",
        "host",
        (_arg("blueprint", "A blueprint code"),),
    ),
    CommandSpec(
        "blueprint create",
        "!blueprint create CODE (YAML below)",
        "A new blueprint",
        "admins",
        (_arg("definition", "CODE then the YAML"),),
    ),
    CommandSpec(
        "blueprint edit",
        "!blueprint edit CODE (YAML below)",
        "A new version of a blueprint",
        "admins",
        (_arg("definition", "CODE then the YAML"),),
    ),
    CommandSpec(
        "blueprint history",
        "!blueprint history CODE",
        "A blueprint's versions",
        "host",
        (_arg("blueprint", "A blueprint code"),),
    ),
    CommandSpec(
        "blueprint rollback",
        "!blueprint rollback CODE VERSION",
        "Re-pin an earlier version",
        "admins",
        (_arg("blueprint", "A blueprint code"), _arg("version", "The version", "integer")),
    ),
    CommandSpec(
        "catchup",
        "!catchup [WINDOW]",
        "What others said since you last read (or in WINDOW: 2h, 3d, today, since yesterday); "
        "in a DM: across your sessions",
        "member",
        (_arg("window", "2h, 3d, today or since yesterday"),),
    ),
    CommandSpec(
        "usage",
        "!usage [7d|30d]",
        "LLM calls, tokens and cost in this workspace",
        "member",
        (_arg("period", "7d or 30d", "enum", enum=("7d", "30d")),),
    ),
)

BY_NAME: dict[str, CommandSpec] = {c.name: c for c in COMMANDS}
NAMES: frozenset[str] = frozenset(BY_NAME)


def subcommands(group: str) -> list[CommandSpec]:
    return [c for c in COMMANDS if c.name.startswith(f"{group} ")]


def msc4332_content(commands: Iterable[CommandSpec] = COMMANDS) -> dict[str, Any]:
    """The org.matrix.msc4332.commands state event content that advertises the commands."""
    advertised = []
    for command in commands:
        if not command.advertise:
            continue
        arguments = []
        for argument in command.arguments:
            described: dict[str, Any] = {
                "type": argument.type,
                "description": {"m.text": [{"body": argument.description}]},
            }
            if argument.variadic:
                described["variadic"] = True
            if argument.enum:
                described["enum"] = list(argument.enum)
            arguments.append(described)
        advertised.append(
            {
                "syntax": command.msc4332_syntax,
                "arguments": arguments,
                "description": {"m.text": [{"body": command.summary}]},
            }
        )
    return {"sigil": "!", "commands": advertised}
