"""Commands that need nothing but the bot itself."""

from __future__ import annotations

from bot.commands.call import CommandCall
from bot.core import strings


async def ping(call: CommandCall) -> None:
    await call.reply.send_notice(strings.PONG.format(ms=call.age_ms))
