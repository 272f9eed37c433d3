-- End-to-end encryption (docs/encryption.md). The Olm and Megolm state itself is in mautrix's
-- crypto_* tables, created by its own upgrade table in this database (bot/encryption/machine.py).

-- What a transaction carried for encryption: to-device messages (room keys among them), device
-- list changes, key counts. Journaled with the events, before the homeserver's 200: a to-device
-- message is sent once. NULL once the bot's device has taken it in (or when there was none).
ALTER TABLE appservice_transactions ADD COLUMN crypto text;
CREATE INDEX appservice_transactions_crypto ON appservice_transactions (seq)
    WHERE crypto IS NOT NULL;

-- Rooms whose m.room.encryption state the bot has seen: its content (algorithm, rotation).
-- A room never stops being encrypted, so a row is never removed while the room is known.
CREATE TABLE room_encryption (
    room_id    text        PRIMARY KEY,
    content    jsonb       NOT NULL,
    since      timestamptz NOT NULL DEFAULT now()
);
-- Rooms whose encryption state has been read from the homeserver at least once (a room joined
-- before this version, or whose state was sent before the bot joined).
ALTER TABLE rooms ADD COLUMN encryption_checked boolean NOT NULL DEFAULT false;

-- A message the bot could not decrypt: its sender is told once per Megolm session, never in a
-- loop (bot/encryption/undecryptable.py).
CREATE TABLE undecryptable_notices (
    room_id    text        NOT NULL,
    session_id text        NOT NULL,
    sender     text        NOT NULL,
    told_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, session_id)
);
