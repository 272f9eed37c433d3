-- The foundation: what the homeserver pushed, what the bot has handled, and the rooms it is in.

-- Transactions already stored. Synapse on SQLite reuses transaction IDs after a restart, so a
-- transaction repeats an earlier one only when its ID *and* its content fingerprint match.
CREATE TABLE appservice_transactions (
    txn_id      text        NOT NULL,
    fingerprint bytea       NOT NULL,
    event_count integer     NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (txn_id, fingerprint)
);
CREATE INDEX appservice_transactions_received_at ON appservice_transactions (received_at);

-- Every room event received, in arrival order (id), persisted before the homeserver gets its
-- 200. The bot works through each room's pending events in order; event_id is unique so that an
-- event delivered twice (in two transactions) is stored, and handled, once.
CREATE TABLE inbox_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text        NOT NULL UNIQUE,
    room_id     text        NOT NULL,
    event       jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    state       text        NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'done', 'failed')),
    attempts    integer     NOT NULL DEFAULT 0,
    handled_at  timestamptz,
    error       text
);
CREATE INDEX inbox_events_pending ON inbox_events (room_id, id) WHERE state = 'pending';
CREATE INDEX inbox_events_handled_at ON inbox_events (handled_at) WHERE state <> 'pending';

-- What the bot sent, by the transaction ID it chose. Synapse forgets the transaction IDs of
-- appservice users when it restarts, so this table is how a retried send stays one message.
CREATE TABLE sent_events (
    txn_id   text        PRIMARY KEY,
    room_id  text        NOT NULL,
    event_id text        NOT NULL,
    sent_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sent_events_sent_at ON sent_events (sent_at);

-- Rooms the bot has been invited to, is in, or has left.
CREATE TABLE rooms (
    room_id            text        PRIMARY KEY,
    membership         text        NOT NULL CHECK (membership IN ('invite', 'join', 'leave', 'ban')),
    -- A direct chat with one person (the invite said is_direct); every message there is an @ask.
    is_direct          boolean     NOT NULL DEFAULT false,
    direct_user        text,
    invited_by         text,
    -- Hash of the MSC4332 commands state event content in place (null: none yet, for lack of
    -- power). A new version of Doryo with other commands publishes again.
    commands_hash      text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
