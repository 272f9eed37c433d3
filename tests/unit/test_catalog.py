"""The command catalog and the MSC4332 state event it produces."""

from __future__ import annotations

from bot.commands.catalog import BY_NAME, COMMANDS, msc4332_content
from bot.commands.dispatch import HANDLERS, is_available


def test_every_spec_command_is_known() -> None:
    spec = {
        "ask",
        "act",
        "help",
        "ping",
        "ws create",
        "ws invite",
        "ws join",
        "ws members",
        "ws delegate",
        "ws undelegate",
        "ws settings",
        "ws use",
        "session start",
        "session end",
        "sessions",
        "remember",
        "forget",
        "memory",
        "tools",
        "tool",
        "connect",
        "connections",
        "disconnect",
        "actions",
        "confirm",
        "cancel",
        "tasks",
        "task done",
        "agent",
        "agent use",
        "blueprint list",
        "blueprint show",
        "blueprint create",
        "blueprint edit",
        "blueprint history",
        "blueprint rollback",
        "usage",
    }
    assert spec <= set(BY_NAME)


def test_groups_have_their_subcommands() -> None:
    for command in COMMANDS:
        if " " in command.name:
            assert command.name.split(" ")[0] in BY_NAME, command.name


def test_handlers_are_catalog_commands() -> None:
    assert set(HANDLERS) <= set(BY_NAME)
    assert is_available("ping") and is_available("help")


def test_msc4332_content_shape() -> None:
    content = msc4332_content()
    assert content["sigil"] == "!"
    by_syntax = {c["syntax"]: c for c in content["commands"]}
    assert "ws" not in by_syntax  # groups are not offered, their subcommands are
    ask = by_syntax["ask {question}"]
    assert ask["arguments"] == [
        {"type": "string", "description": {"m.text": [{"body": "Your question"}]}}
    ]
    invite = by_syntax["ws invite {users}"]
    assert invite["arguments"][0]["type"] == "user_id" and invite["arguments"][0]["variadic"]
    usage = by_syntax["usage {period}"]
    assert usage["arguments"][0]["enum"] == ["7d", "30d"]
    for command in content["commands"]:
        assert command["description"]["m.text"][0]["body"]
        # Every {name} in the syntax has an argument description, in order.
        assert command["syntax"].count("{") == len(command["arguments"])


def test_help_lists_every_command_with_who_may_run_it() -> None:
    """`!help` said `!ws …` was for members while most of it is host-only."""
    from bot.commands.catalog import subcommands
    from bot.commands.dispatch import help_text

    text = help_text()
    lines = text.splitlines()
    for command in COMMANDS:
        if subcommands(command.name):
            assert f"— {command.summary}" not in text, f"{command.name}: a group, shown by parts"
            continue
        line = next((x for x in lines if x.startswith(f"- `{command.usage}`")), None)
        assert line is not None, f"!help lacks {command.usage}"
        assert line.endswith(f"_({command.who})_") or "not available" in line, line
        assert command.summary in line
    assert "_(host)_" in next(x for x in lines if "`!ws settings" in x)
