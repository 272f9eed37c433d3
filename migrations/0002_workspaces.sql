-- Workspaces (Matrix spaces), their members and invite codes, sessions (rooms in a space) and
-- every session's message history.

CREATE TABLE workspaces (
    -- Opaque and stable ("ws_…"): the space's room ID is kept apart, for lookups.
    id          text        PRIMARY KEY,
    space_id    text        NOT NULL UNIQUE,
    name        text        NOT NULL,
    -- The person the bot treats as the host (the one it DMs). Roles themselves follow the
    -- space's power levels: 100 (or a creator of a v12 room) = host, 50 = delegate.
    host        text        NOT NULL,
    -- True when the bot created the space (it is its creator and can always manage it).
    created_by_bot boolean  NOT NULL,
    settings    jsonb       NOT NULL DEFAULT '{}',
    -- The `!ws create` event: handling it again (after a crash) finds this workspace.
    origin_event text       UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Members of the space, as the bot last saw them (m.room.member and m.room.power_levels).
CREATE TABLE workspace_members (
    workspace_id text        NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    user_id      text        NOT NULL,
    membership   text        NOT NULL CHECK (membership IN ('invite', 'join', 'leave', 'ban')),
    role         text        NOT NULL DEFAULT 'member'
                             CHECK (role IN ('host', 'delegate', 'member')),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);

-- Invite codes: only a hash is kept. uses_left counts down to 0.
CREATE TABLE workspace_invites (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id text        NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    code_hash    bytea       NOT NULL UNIQUE,
    created_by   text        NOT NULL,
    uses_left    integer     NOT NULL CHECK (uses_left >= 0),
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- In a DM with the bot, which workspace a person's commands apply to (`!ws use NAME`).
CREATE TABLE direct_workspace (
    user_id      text        PRIMARY KEY,
    workspace_id text        NOT NULL REFERENCES workspaces ON DELETE CASCADE
);

CREATE TABLE sessions (
    room_id      text        PRIMARY KEY,
    workspace_id text        NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    topic        text        NOT NULL DEFAULT '',
    status       text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    -- The room existed before it was added to the space (adopted) or the bot created it.
    adopted      boolean     NOT NULL DEFAULT false,
    started_by   text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    ended_by     text,
    ended_at     timestamptz,
    summary      text,
    -- The `!session start` event: handling it again (after a crash) finds this session.
    origin_event text        UNIQUE,
    -- The last seq given to a message: messages take the next one under this row's lock,
    -- so seqs are gap-free even when several messages arrive at once.
    last_seq     bigint      NOT NULL DEFAULT 0
);
CREATE INDEX sessions_workspace ON sessions (workspace_id, status);

-- Every message of a session, numbered 1, 2, 3 … in the order the bot received them.
CREATE TABLE messages (
    room_id     text        NOT NULL REFERENCES sessions ON DELETE CASCADE,
    seq         bigint      NOT NULL,
    event_id    text        NOT NULL UNIQUE,
    sender      text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('user', 'agent', 'system')),
    -- Null once redacted: the row stays so that seqs keep no gaps.
    body        text,
    -- A command for the bot (!ping, !ws invite …), not part of the conversation.
    is_command  boolean     NOT NULL DEFAULT false,
    sent_at     timestamptz NOT NULL,
    edited_at   timestamptz,
    redacted_at timestamptz,
    PRIMARY KEY (room_id, seq)
);
