"""The bot's device: its keys, what it encrypts and decrypts, and what the homeserver must send.

mautrix.crypto's OlmMachine does the Olm and Megolm work (python-olm underneath, its keys in
mautrix's asyncpg crypto store in Doryo's own database); this module gives it what an
appservice has instead of /sync — the to-device messages, device-list changes and key counts of
each transaction (MSC2409, MSC3202), journaled before the homeserver's 200 (bot/core/inbox.py) —
and keeps one device across restarts: its ID is stored with the keys, and the device is made
with MSC4190 (PUT /devices/{id} as the appservice, no access token of its own, no keyless device
left by a login).

One process owns the keys: Olm sessions and the outbound Megolm session cannot be shared by two
writers, so the owner holds a PostgreSQL advisory lock for as long as it runs, and a second
owner refuses to start. The deployment's workers use this device through the owner
(bot.encryption.shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiohttp
import asyncpg
from mautrix.api import HTTPAPI, Method, Path
from mautrix.client import Client
from mautrix.crypto import OlmMachine, PgCryptoStore
from mautrix.crypto.cross_signing_key import CrossSigningSeeds
from mautrix.errors import (
    CryptoError,
    DecryptedPayloadError,
    DuplicateMessageIndex,
    EncryptionError,
    MatrixRequestError,
    MatrixResponseError,
    MismatchingRoomError,
    SessionNotFound,
    VerificationError,
)
from mautrix.types import JSON as MautrixJSON
from mautrix.types import (
    ASToDeviceEvent,
    DeviceID,
    DeviceLists,
    DeviceOTKCount,
    EncryptedEvent,
    EventType,
    RoomID,
    SerializerError,
    UserID,
)
from mautrix.util.async_db import Database

from appservice.errors import EncryptionUnavailable, MatrixError
from bot.core.config import Config
from bot.core.errors import ConfigError
from bot.encryption.device import gets_new_key
from bot.encryption.rooms import RoomEncryption, StateUnknown

log = logging.getLogger(__name__)

JSON = dict[str, Any]

OWNER_LOCK = 0x646F72796F_E2EE
"""pg_advisory_lock key held by the process that owns the keys."""
PING_TYPE = "org.doryo.to_device_ping"
"""A to-device message the bot sends itself at start: its arrival in a transaction shows the
homeserver delivers to-device messages to the appservice."""
PING_WAIT = 15.0
PING_RESEND = 2.0
READY_WAIT = 30.0
"""How long a message to an encrypted room waits for the device to be ready at start."""

MISSING_TO_DEVICE = (
    "encryption.enabled is true, but the homeserver does not deliver to-device messages to "
    "the appservice, so no room key would ever reach the bot. On Synapse set "
    "experimental_features: {msc2409_to_device_messages_enabled: true, "
    "msc3202_transaction_extensions: true} in homeserver.yaml, and in the appservice "
    "registration receive_ephemeral: true, org.matrix.msc3202: true and io.element.msc4190: true "
    "(`doryo registration` writes them); then restart the homeserver. See docs/encryption.md."
)
MISSING_KEY_COUNTS = (
    "encryption.enabled is true and to-device messages arrive, but the homeserver does not "
    "send the bot's one-time key counts (MSC3202), so its keys would run out and new devices "
    "could not reach it. On Synapse set experimental_features: "
    "{msc3202_transaction_extensions: true} in homeserver.yaml and org.matrix.msc3202: true in "
    "the appservice registration, then restart the homeserver. See docs/encryption.md."
)


class _Ordinary(logging.Filter):
    """mautrix.crypto warns, for every message, about people who have not set up
    cross-signing and about a key count it has nothing to add to: ordinary on any homeserver,
    so debug lines here rather than a warning per message."""

    PREFIXES = (
        "Didn't find cross-signing key",
        "Device ",  # "… isn't cross-signed"
        "No one-time keys nor device keys",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith(self.PREFIXES):
            if str(record.msg).startswith("Device ") and "cross-signed" not in str(record.msg):
                return True
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def cross_signing_seeds(seed: str) -> CrossSigningSeeds:
    """The bot's three cross-signing keys, derived from the configured seed (HKDF-SHA256): the
    same seed makes the same keys on any machine, so nothing but the config needs a backup."""
    derived = []
    prk = hmac.new(b"doryo cross-signing", seed.encode(), hashlib.sha256).digest()  # extract
    for usage in ("master", "self_signing", "user_signing"):
        derived.append(hmac.new(prk, f"{usage}\x01".encode(), hashlib.sha256).digest())
    return CrossSigningSeeds(*derived)


NEVER_ENCRYPTED = frozenset({"m.room.redaction", "m.room.encrypted"})


class NotAccepted(Exception):
    """A decrypted event of a kind that is never encrypted (a forgery): dropped, unanswered."""


class Undecryptable(Exception):
    """A message whose key the bot does not have (sent before it joined, or withheld)."""

    def __init__(self, session_id: str, reason: str) -> None:
        super().__init__(reason)
        self.session_id = session_id


class Encryption:
    def __init__(
        self, config: Config, pool: asyncpg.Pool, http: aiohttp.ClientSession, database_url: str
    ) -> None:
        self.config = config
        self._pool = pool
        crypto_log = logging.getLogger("mau.crypto")
        if not any(isinstance(f, _Ordinary) for f in crypto_log.filters):
            crypto_log.addFilter(_Ordinary())
        self._database_url = database_url
        self.ready = asyncio.Event()
        """Set once the device's keys are loaded and the homeserver is known to deliver what
        the device needs."""
        self.user_id = UserID(config.bot_user_id)
        api = HTTPAPI(
            config.homeserver.address,
            config.appservice.as_token.get_secret_value(),
            client_session=http,
            default_retry_count=2,
            log=logging.getLogger("bot.encryption.http"),  # type: ignore[arg-type]
        )
        self.client = Client(mxid=self.user_id, api=api)
        self.rooms = RoomEncryption(pool, self._read_encryption_state)
        self._db: Database | None = None
        self._store: PgCryptoStore | None = None
        self.machine: OlmMachine | None = None
        self._owner: asyncpg.pool.PoolConnectionProxy[Any] | None = None
        self._ping_nonce = ""
        self._ping_arrived = asyncio.Event()
        self._key_counts_arrived = asyncio.Event()
        self._sharing: dict[str, asyncio.Lock] = {}

    @property
    def device_id(self) -> str:
        return str(self.client.device_id or "")

    # Start and stop --------------------------------------------------------------------------

    async def start(self, *, nudge: Callable[[], Awaitable[None]] | None = None) -> None:
        """Load or make the device and its keys, then check that the homeserver delivers
        to-device messages and key counts. Raises ConfigError naming what is missing.
        `nudge`: makes the homeserver retry its delivery to the appservice (it may still hold
        the bot for down: MatrixAPI.nudge_appservice), tried once before giving up."""
        await self._take_ownership()
        self._db = Database.create(
            self._database_url,
            upgrade_table=PgCryptoStore.upgrade_table,
            db_args={"min_size": 1, "max_size": 4},
            log=logging.getLogger("bot.encryption.db"),
        )
        await self._db.start()
        pickle_key = self.config.encryption.pickle_key.get_secret_value()
        self._store = PgCryptoStore(self.user_id, pickle_key, self._db)
        await self._store.open()
        self.machine = OlmMachine(self.client, self._store, self.rooms)
        stored = await self._store.get_device_id()
        new = not stored
        await self._ensure_device(stored or DeviceID(f"DORYO{secrets.token_hex(4).upper()}"))
        await self._delete_other_devices()
        await self.machine.load()
        assert self.machine.account is not None
        if new:
            await self._store.put_device_id(self.client.device_id)
            await self.machine.share_keys()
            log.info("encryption: made device %s for %s", self.client.device_id, self.user_id)
        elif not self.machine.account.shared or not await self._keys_on_server():
            # Never shared, or the device was deleted on the homeserver (made again above,
            # without keys): its identity keys go up again with new one-time keys.
            self.machine.account.shared = False
            await self.machine.share_keys()
        else:
            log.info("encryption: device %s of %s loaded", self.client.device_id, self.user_id)
        await self._cross_sign()
        await self._check_delivery(nudge)
        self.ready.set()

    async def _take_ownership(self) -> None:
        conn = await self._pool.acquire()
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", OWNER_LOCK):
            await self._pool.release(conn)
            raise ConfigError(
                "another Doryo process holds this database's encryption keys (one process owns "
                "them: Olm sessions cannot have two writers); stop it or turn encryption off here"
            )
        self._owner = conn

    async def _ensure_device(self, device_id: DeviceID) -> None:
        """The device under this ID exists (MSC4190: made by the appservice, idempotent)."""
        self.client.api.as_user_id = self.user_id
        try:
            await self.client.api.request(
                Method.PUT,
                Path.v3.devices[device_id],
                {"display_name": self.config.appservice.bot_displayname},
            )
        except MatrixRequestError as e:
            raise ConfigError(
                f"the homeserver refused to make the bot's device ({e}); it must let an "
                "appservice manage its users' devices (MSC4190: io.element.msc4190: true in "
                "the registration). See docs/encryption.md."
            ) from None
        self.client.api.as_device_id = device_id
        self.client.device_id = device_id

    async def _delete_other_devices(self) -> None:
        """The bot has one device: any other one is from a crypto store that was lost (a new
        database). People's clients would go on encrypting for it and show it as unverified."""
        response = await self.client.api.request(Method.GET, Path.v3.devices)
        for device in response.get("devices", []):
            other = device.get("device_id") if isinstance(device, dict) else None
            if isinstance(other, str) and other != self.client.device_id:
                try:
                    await self.client.api.request(Method.DELETE, Path.v3.devices[other])
                    log.info("encryption: deleted %s's old device %s", self.user_id, other)
                except MatrixRequestError as e:
                    log.warning("encryption: could not delete old device %s: %s", other, e)

    async def _cross_sign(self) -> None:
        """With `encryption.cross_signing_seed`, the bot's cross-signing keys are derived from it
        (published the first time) and sign its device: clients show the device as verified by
        its owner. Without it the device is only self-signed, as a new login's is."""
        seed = self.config.encryption.cross_signing_seed.get_secret_value()
        machine = self.machine
        if not seed or machine is None:
            return
        seeds = cross_signing_seeds(seed)
        ours = seeds.to_keys().public_keys
        await machine.get_cross_signing_public_keys(self.user_id)  # fetched and stored
        published = await machine.get_own_cross_signing_public_keys()
        if published is None:
            await machine._publish_cross_signing_keys(seeds.to_keys())
            log.info("encryption: published cross-signing keys for %s", self.user_id)
        elif published.master_key != ours.master_key:
            log.warning(
                "encryption: %s already has other cross-signing keys than the configured seed "
                "makes; its device is not cross-signed (docs/encryption.md)",
                self.user_id,
            )
            return
        else:
            machine._import_cross_signing_keys(seeds)
        own = machine.own_identity
        await machine.sign_own_device(own)

    async def _keys_on_server(self) -> bool:
        """The device still has its keys on the homeserver (an admin may have deleted it)."""
        response = await self.client.query_keys([self.user_id])
        keys = response.device_keys.get(self.user_id, {}).get(self.client.device_id)
        return keys is not None and len(keys.keys) > 0

    async def _check_delivery(self, nudge: Callable[[], Awaitable[None]] | None) -> None:
        self._ping_nonce = secrets.token_hex(8)
        self._ping_arrived.clear()
        deadline = time.monotonic() + PING_WAIT
        # Sent again every few seconds: Synapse drops to-device messages for an appservice it
        # has marked down (as after a restart), until its retries find it up again — which,
        # after its own restart, wait for an event for the appservice: the nudge.
        while not self._ping_arrived.is_set():
            if time.monotonic() > deadline:
                raise ConfigError(MISSING_TO_DEVICE)
            await self.client.api.request(
                Method.PUT,
                Path.v3.sendToDevice[PING_TYPE][secrets.token_hex(8)],
                {"messages": {self.user_id: {self.client.device_id: {"nonce": self._ping_nonce}}}},
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_RESEND):
                    await self._ping_arrived.wait()
            if not self._ping_arrived.is_set() and nudge is not None:
                log.info("encryption: no to-device delivery yet; waking the homeserver's retries")
                try:
                    await nudge()
                except MatrixError as e:
                    log.warning("encryption: waking the homeserver's delivery failed: %s", e)
                nudge = None
                deadline = max(deadline, time.monotonic() + PING_WAIT)
        try:
            # The homeserver reports the counts of a device that has keys, with the next
            # transaction at the latest (the ping's own, usually).
            async with asyncio.timeout(PING_WAIT):
                await self._key_counts_arrived.wait()
        except TimeoutError:
            raise ConfigError(MISSING_KEY_COUNTS) from None

    async def stop(self) -> None:
        self.ready.clear()
        if self._db is not None:
            await self._db.stop()
            self._db = None
        if self._owner is not None:
            try:
                await self._owner.execute("SELECT pg_advisory_unlock($1)", OWNER_LOCK)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                pass  # the lock goes with the connection
            await self._pool.release(self._owner)
            self._owner = None

    # What transactions carry -----------------------------------------------------------------

    def saw(self, crypto: JSON) -> None:
        """A transaction's encryption part, as it is journaled (must not block): notes the
        start-up check's ping and key counts."""
        for message in crypto.get("to_device", []):
            if (
                message.get("type") == PING_TYPE
                and message.get("sender") == self.user_id
                and message["content"].get("nonce") == self._ping_nonce
            ):
                self._ping_arrived.set()
        counts = crypto.get("otk_counts", {}).get(self.user_id, {})
        if isinstance(counts, dict) and self.client.device_id in counts:
            self._key_counts_arrived.set()

    def saw_room_event(self, event: JSON) -> None:
        """A room event as it is journaled: an m.room.encryption state event makes the room
        encrypted at once, before anything else there is handled or sent."""
        content = event.get("content")
        if (
            event.get("type") == "m.room.encryption"
            and event.get("state_key") == ""
            and isinstance(content, dict)
            and content.get("algorithm")
        ):
            self.rooms.saw(event["room_id"], content)

    async def take_in(self, crypto: JSON) -> None:
        """A journaled transaction's encryption part, in order: to-device messages (room keys),
        device-list changes, one-time key counts. A message that fails alone is logged and
        skipped; the database being away raises (the part stays in the journal)."""
        machine = self.machine
        assert machine is not None
        for raw in crypto.get("to_device", []):
            if raw.get("type") == PING_TYPE:
                continue
            try:
                message = ASToDeviceEvent.deserialize(cast(MautrixJSON, raw))
                await machine.handle_as_to_device_event(cast(ASToDeviceEvent, message))
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
                raise
            except Exception as e:
                # Never the content: it may be a key.
                log.warning(
                    "encryption: a to-device %s from %s was not taken in: %s: %s",
                    raw.get("type"),
                    raw.get("sender"),
                    type(e).__name__,
                    e,
                )
        lists = crypto.get("device_lists")
        if lists:
            await machine.handle_device_lists(DeviceLists.deserialize(cast(MautrixJSON, lists)))
        counts = crypto.get("otk_counts", {}).get(self.user_id, {})
        mine = counts.get(self.client.device_id) if isinstance(counts, dict) else None
        if isinstance(mine, dict):
            await machine.handle_otk_count(DeviceOTKCount.deserialize(cast(MautrixJSON, mine)))

    # Sending and reading ---------------------------------------------------------------------

    async def _ready_machine(self) -> OlmMachine:
        if not self.ready.is_set():
            try:
                async with asyncio.timeout(READY_WAIT):
                    await self.ready.wait()
            except TimeoutError:
                raise EncryptionUnavailable(
                    "the bot's encryption keys are not ready yet"
                ) from None
        assert self.machine is not None
        return self.machine

    async def encrypt(self, room_id: str, event_type: str, content: JSON) -> tuple[str, JSON]:
        """The event as it must be sent: encrypted in an encrypted room, as it is elsewhere."""
        if event_type == "m.room.encrypted" or not await self.rooms.is_encrypted(RoomID(room_id)):
            return event_type, content
        machine = await self._ready_machine()
        kind = EventType.find(event_type, EventType.Class.MESSAGE)
        try:
            encrypted = await machine.encrypt_megolm_event(RoomID(room_id), kind, content)
        except EncryptionError:
            await self._share_key(machine, room_id)
            encrypted = await machine.encrypt_megolm_event(RoomID(room_id), kind, content)
        return "m.room.encrypted", encrypted.serialize()

    async def _share_key(self, machine: OlmMachine, room_id: str) -> None:
        """A new room key for the people in the room now (joined or invited, from the room's
        state on the homeserver, never from what an event claimed)."""
        lock = self._sharing.setdefault(room_id, asyncio.Lock())
        async with lock:
            if await machine.crypto_store.get_outbound_group_session(RoomID(room_id)):
                return  # shared while this one waited
            started = time.monotonic()
            members = await self._members(room_id)
            await machine.share_group_session(RoomID(room_id), [UserID(u) for u in members])
            log.info(
                "encryption: shared a room key in %s with %d people in %.0f ms",
                room_id,
                len(members),
                (time.monotonic() - started) * 1000,
            )

    async def _members(self, room_id: str) -> list[str]:
        try:
            response = await self.client.api.request(
                Method.GET,
                Path.v3.rooms[room_id].members,
                query_params={"not_membership": "leave"},
            )
        except (MatrixRequestError, MatrixResponseError, aiohttp.ClientError) as e:
            raise EncryptionUnavailable(f"could not read the members of {room_id}: {e}") from None
        members = {self.user_id}
        for event in response.get("chunk", []):
            if (
                isinstance(event, dict)
                and isinstance(event.get("state_key"), str)
                and isinstance(event.get("content"), dict)
                and event["content"].get("membership") in ("join", "invite")
            ):
                members.add(event["state_key"])
        return sorted(members)

    async def check(self) -> None:
        if not self.ready.is_set():
            raise EncryptionUnavailable("the bot's encryption keys are not ready yet")

    async def room_encrypted(self, room_id: str, content: JSON) -> None:
        await self.rooms.record(room_id, content)

    async def member_changed(self, room_id: str, user_id: str, before: str, now: str) -> None:
        """Someone's membership changed in an encrypted room: the next message gets a new key,
        shared with the people there then (one who left never reads what follows)."""
        if not gets_new_key(before, now) or self.machine is None:
            return
        if not await self.rooms.is_encrypted(RoomID(room_id)):
            return
        await self.machine.crypto_store.remove_outbound_group_session(RoomID(room_id))

    async def decrypt(self, event: JSON, *, wait: float = 0) -> JSON:
        """The event as its sender wrote it: its type and content decrypted, the rest (ID,
        sender, time, the relation kept outside the ciphertext) from the envelope.

        Raises Undecryptable when the key is not there after `wait` seconds."""
        machine = await self._ready_machine()
        try:
            encrypted = EncryptedEvent.deserialize(cast(MautrixJSON, event))
        except Exception:
            raise Undecryptable("", "the encrypted event is malformed") from None
        session_id = str(getattr(encrypted.content, "session_id", "") or "")
        try:
            decrypted = await self._decrypt_waiting(machine, encrypted, session_id, wait)
        except Undecryptable:
            raise
        except (
            DuplicateMessageIndex,
            VerificationError,
            DecryptedPayloadError,
            MismatchingRoomError,
            SerializerError,
            KeyError,
            TypeError,
            ValueError,
        ) as e:
            # Decrypted, and wrong: a replayed ciphertext, a key that does not match its
            # sender's device, a payload made for another room or that does not parse.
            raise NotAccepted(f"{type(e).__name__} from {event.get('sender')}: {e}") from None
        except CryptoError as e:
            # The key is withheld, or the one the bot has does not open this message.
            raise Undecryptable(session_id, f"{type(e).__name__}: {e}") from None
        kind = str(decrypted.type)
        if (
            kind in NEVER_ENCRYPTED
            or kind.startswith(("m.room.", "m.space."))
            and kind not in ("m.room.message",)
        ):
            # State events and redactions are never encrypted (the spec): inside a ciphertext
            # such a type is a forgery meant to look like one. Nothing acts on it.
            raise NotAccepted(f"an encrypted {kind} from {event.get('sender')}")
        plain = dict(event)
        plain["type"] = kind
        plain["content"] = decrypted.content.serialize()
        plain["org.doryo.encrypted"] = True
        return plain

    @staticmethod
    async def _decrypt_waiting(
        machine: OlmMachine, encrypted: EncryptedEvent, session_id: str, wait: float
    ) -> Any:
        try:
            return await machine.decrypt_megolm_event(encrypted)
        except SessionNotFound:
            if wait <= 0 or not await machine.wait_for_session(
                RoomID(encrypted.room_id), encrypted.content.session_id, timeout=wait
            ):
                raise Undecryptable(session_id, "the room key has not arrived") from None
        return await machine.decrypt_megolm_event(encrypted)

    async def request_key(self, event: JSON) -> None:
        """Ask the sender's devices for the key of a message the bot cannot read."""
        machine = await self._ready_machine()
        content = event.get("content") or {}
        sender = event.get("sender")
        if not isinstance(sender, str) or not isinstance(content, dict):
            return
        try:
            await machine.request_room_key(
                RoomID(event["room_id"]),
                content.get("sender_key", ""),
                content.get("session_id", ""),
                {UserID(sender): [DeviceID("*")]},
                timeout=0,
            )
        except Exception as e:  # a courtesy: the notice goes out either way
            log.info("encryption: asking %s for a room key failed: %s", sender, e)

    async def _read_encryption_state(self, room_id: str) -> JSON | None:
        try:
            content = await self.client.api.request(
                Method.GET, Path.v3.rooms[room_id].state["m.room.encryption"][""]
            )
        except MatrixRequestError as e:
            if e.errcode == "M_NOT_FOUND":
                return None
            if e.http_status == 403:
                raise StateUnknown(room_id) from None  # not in the room (yet)
            raise EncryptionUnavailable(f"could not read the state of {room_id}: {e}") from None
        except (MatrixResponseError, aiohttp.ClientError) as e:
            raise EncryptionUnavailable(f"could not read the state of {room_id}: {e}") from None
        return content if isinstance(content, dict) and content.get("algorithm") else None
