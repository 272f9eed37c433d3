"""The per-event boundary: route a persisted event, do what it calls for, report failures —
for every kind of event (commands, reactions, invites, memberships, state).

Where a person waits for the bot — a command, a reaction on a card, an invite — a UserError's
text is told to the room, and any other exception (a bug) gets a short notice with a reference.
Where nobody waits (a membership, power levels, what the bot observes of an ordinary message), a
UserError is logged and a bug only logged. A bug then goes on to the dispatcher, which logs it
with the room and event and marks the event failed. Failures of what the bot depends on
(homeserver, database) pass through untouched: the dispatcher retries the event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from appservice.errors import MatrixRequestError
from appservice.matrix import JSON
from bot.commands.catalog import NAMES
from bot.commands.dispatch import dispatch
from bot.commands.parser import Act, Addressing, Ask, Request, parse
from bot.context import Context
from bot.core import strings
from bot.core.config import Config
from bot.core.dispatcher import RETRYABLE
from bot.core.errors import UserError
from bot.core.inbox import InboxEvent
from bot.core.replies import Replier
from bot.core.router import (
    BotInvited,
    BotMembership,
    Ignore,
    Message,
    PowerLevelsChanged,
    Reaction,
    RouterRules,
    StaleMessage,
    route,
)
from bot.data import deletion
from bot.encryption import undecryptable
from bot.encryption.device import Device
from bot.history import recorder as history
from bot.rooms.joining import greet, join_invited, publish_commands
from bot.rooms.members import display_name, is_dm, read_members
from bot.sessions import adoption
from bot.workspaces.observe import on_space_event
from bot.workspaces.spaces import adopt_space, is_space

log = logging.getLogger(__name__)


def router_rules(config: Config) -> RouterRules:
    return RouterRules(
        bot_user_id=config.bot_user_id,
        namespace=re.compile(config.user_namespace_regex),
        ignore_users=tuple(re.compile(p) for p in config.bot.ignore_users),
        max_command_age_ms=int(config.bot.max_command_age * 1000),
    )


def addressing(config: Config) -> Addressing:
    """How commands are addressed in any room: a DM or a reply to the bot adds to it."""
    return Addressing(
        bot_user_id=config.bot_user_id,
        bot_names=(config.appservice.bot_displayname,),
        commands=NAMES,
    )


class EventHandler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rules = router_rules(ctx.config)
        self.addressing = addressing(ctx.config)

    async def handle(self, item: InboxEvent, attempt: int) -> None:
        event = item.event
        room_id = item.room_id
        reply = self._replier(item, event, attempt)
        if event.get("type") == "m.room.encrypted":
            readable = await self._decrypted(event, reply)
            if readable is None:
                return
            event = readable
            reply = self._replier(item, event, attempt)
        decision = route(event, self.rules, now_ms=time.time_ns() // 1_000_000)
        # Someone waits for an answer to these; a message's request is answered in _run.
        waiting = isinstance(decision, Reaction | BotInvited)
        try:
            await self._observe(room_id, event, reply)
            await self._act(decision, item, event, reply)
        except UserError as e:
            if waiting:
                await reply.send_notice(str(e))
            else:
                log.warning("%s in %s: %s", type(decision).__name__, room_id, e)
        except RETRYABLE:
            raise
        except Exception:
            if waiting:
                await self._tell_failure(type(decision).__name__, event, reply)
            raise

    def _replier(self, item: InboxEvent, event: Mapping[str, Any], attempt: int) -> Replier:
        content = event.get("content")
        return Replier(
            self.ctx.matrix,
            self.ctx.sent,
            item.room_id,
            item.event_id,
            retried=attempt > 1,
            content=content if isinstance(content, dict) else None,
        )

    async def _decrypted(self, event: dict[str, Any], reply: Replier) -> dict[str, Any] | None:
        """An encrypted event as its sender wrote it; None if it cannot be read (its sender is
        told once: bot.encryption.undecryptable)."""
        ctx = self.ctx
        if ctx.encryption is None:
            log.info("an encrypted event in %s: encryption is off", event.get("room_id"))
            return None
        return await undecryptable.decrypted(
            ctx.encryption,
            ctx.db,
            event,
            reply,
            key_wait=ctx.config.encryption.key_wait,
            namespace=ctx.namespace,
            max_age_ms=self.rules.max_command_age_ms,
        )

    async def _tell_failure(self, what: str, event: Mapping[str, Any], reply: Replier) -> None:
        """A bug while someone waits: a short notice with a reference to find it in the log
        (the traceback follows from the dispatcher)."""
        ref = hashlib.sha256(str(event.get("event_id")).encode()).hexdigest()[:8]
        log.error("handling a %s failed, reference %s (traceback follows)", what, ref)
        try:
            await reply.send_notice(strings.INTERNAL_ERROR.format(ref=ref))
        except Exception as notice_error:
            log.warning("could not tell the room about the failure: %s", notice_error)

    async def _act(
        self, decision: object, item: InboxEvent, event: dict[str, Any], reply: Replier
    ) -> None:
        room_id = item.room_id
        match decision:
            case Ignore(reason):
                log.debug("ignoring %s: %s", item.event_id, reason)
            case BotInvited(inviter):
                if await join_invited(self.ctx, room_id, inviter):
                    await self._joined(room_id, inviter, reply)
            case BotMembership("join"):
                await self.ctx.rooms.set_membership(room_id, "join")
                if await self.ctx.workspaces.by_space(room_id) is None:
                    await publish_commands(self.ctx, room_id)
            case BotMembership(membership):
                await self.ctx.rooms.set_membership(room_id, membership)
            case PowerLevelsChanged():
                room = await self.ctx.rooms.get(room_id)
                if room is not None and room.membership == "join":
                    await publish_commands(self.ctx, room_id)
            case Reaction(target, key):
                sender = str(event.get("sender", ""))
                on_card = (room_id, sender, target, key, item.event_id, reply)
                if not await deletion.on_reaction(self.ctx, *on_card):
                    await self.ctx.actions.on_reaction(*on_card)
            case StaleMessage(age_ms):
                if await self._request(room_id, event) is not None:
                    age = strings.duration(age_ms)
                    await reply.send_notice(strings.STALE_COMMAND.format(age=age))
            case Message(age_ms):
                request = await self._request(room_id, event)
                if request is not None:
                    await self._run(request, room_id, event, reply, age_ms)

    async def _observe(self, room_id: str, event: Mapping[str, Any], reply: Replier) -> None:
        """Keep what the bot knows current: a workspace's space, who is in a room, a session's
        history."""
        ctx = self.ctx
        workspace = await ctx.workspaces.by_space(room_id)
        if workspace is not None:
            await on_space_event(ctx, workspace, event, reply)
            return
        user = event.get("state_key")
        content = event.get("content")
        content = content if isinstance(content, dict) else {}
        if ctx.encryption is not None:
            await self._follow_encryption(ctx.encryption, room_id, event, content)
        if event.get("type") == "m.room.member" and isinstance(user, str):
            if user != ctx.bot_user_id and not ctx.namespace.match(user):
                await ctx.rooms.set_members(
                    room_id,
                    {user: str(content.get("membership"))},
                    names={user: display_name(content)},
                )
        session = await ctx.sessions.get(room_id)
        if session is not None:
            await history.record(ctx, session, event)

    async def _follow_encryption(
        self, encryption: Device, room_id: str, event: Mapping[str, Any], content: JSON
    ) -> None:
        """A room turned encrypted (kept for good); a membership change there (the next message
        gets a new key, for the people in the room then)."""
        kind, user = event.get("type"), event.get("state_key")
        if kind == "m.room.encryption" and user == "" and content.get("algorithm"):
            await encryption.room_encrypted(room_id, content)
        elif kind == "m.room.member" and isinstance(user, str):
            unsigned = event.get("unsigned")
            before = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
            was = before.get("membership") if isinstance(before, dict) else None
            await encryption.member_changed(
                room_id, user, str(was or "leave"), str(content.get("membership"))
            )

    async def _joined(self, room_id: str, inviter: str, reply: Replier) -> None:
        """Just joined: a space may become a workspace, a room a session (if a workspace listed
        it and the rules hold: bot.sessions.adoption); any other room is greeted."""
        ctx = self.ctx
        events = await ctx.matrix.get_state(room_id)
        create = next((e for e in events if e.get("type") == "m.room.create"), {})
        if is_space(create.get("content")):
            await adopt_space(ctx, room_id, inviter, reply)
            return  # a space has no conversation to greet
        await read_members(ctx, room_id, events)
        if await adoption.on_invited(ctx, room_id, inviter, events, reply):
            await publish_commands(ctx, room_id)
            return
        await greet(ctx, room_id, await is_dm(ctx, room_id), reply)

    async def _request(self, room_id: str, event: Mapping[str, Any]) -> Request | None:
        content = event["content"]
        addressing = dataclasses.replace(
            self.addressing,
            is_direct=await is_dm(self.ctx, room_id),
            reply_to_bot=await self._replies_to_bot(room_id, content),
        )
        return parse(content, addressing)

    async def _replies_to_bot(self, room_id: str, content: Mapping[str, Any]) -> bool:
        relates = content.get("m.relates_to")
        if not isinstance(relates, Mapping):
            return False
        in_reply_to = relates.get("m.in_reply_to")
        if not isinstance(in_reply_to, Mapping) or not isinstance(
            in_reply_to.get("event_id"), str
        ):
            return False
        mentions = content.get("m.mentions")
        if isinstance(mentions, Mapping) and self.ctx.bot_user_id in (
            mentions.get("user_ids") or []
        ):
            return True  # clients add the replied-to sender to the mentions: no lookup needed
        try:
            replied = await self.ctx.matrix.get_event(room_id, in_reply_to["event_id"])
        except MatrixRequestError:
            return False  # not visible to the bot, or gone: not a reply to it
        return replied.get("sender") == self.ctx.bot_user_id

    async def _run(
        self, request: Request, room_id: str, event: dict[str, Any], reply: Replier, age_ms: int
    ) -> None:
        if isinstance(request, Ask | Act):
            session = await self.ctx.sessions.get(room_id)
            if session is not None and not session.active:
                await reply.send_notice(strings.SESSION_IS_ENDED)
                return
        try:
            async with self.ctx.activity.busy(room_id) as busy:
                reply.replying = busy.replying
                await dispatch(
                    self.ctx, request, room_id=room_id, event=event, reply=reply, age_ms=age_ms
                )
        except UserError as e:
            await reply.send_notice(str(e))
        except RETRYABLE:
            raise
        except Exception:
            await self._tell_failure("command", event, reply)
            raise
