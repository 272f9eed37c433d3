-- Closed workspaces (docs/security.md): who is in each room, rooms a space listed that the bot
-- could not join yet, invite codes that can be listed and revoked and are spent only by a join
-- that worked, and an adopted room's past read only once its admin agreed.

-- The people in each room the bot is in (not the appservice's own users), from the room's
-- m.room.member events. A DM is a room with exactly one of them: never what an invite claimed.
CREATE TABLE room_members (
    room_id    text        NOT NULL,
    user_id    text        NOT NULL,
    membership text        NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
-- False until the room's full member list was read once (rooms joined before this version).
ALTER TABLE rooms ADD COLUMN members_known boolean NOT NULL DEFAULT false;
-- is_direct and direct_user now follow room_members; until a room's members are read, no room
-- is a DM.
UPDATE rooms SET is_direct = false, direct_user = NULL;

-- A room a host or delegate listed in the space while the bot could not join it. It becomes a
-- session only when the bot is in and every rule holds then (bot/sessions/adoption.py).
CREATE TABLE pending_adoptions (
    room_id      text        NOT NULL,
    workspace_id text        NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    added_by     text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, workspace_id)
);
-- Earlier versions recorded such a room as a session at once: those the bot never entered
-- become pending, and are checked like any other when the bot is invited.
INSERT INTO pending_adoptions (room_id, workspace_id, added_by)
SELECT s.room_id, s.workspace_id, coalesce(s.started_by, '')
FROM sessions s LEFT JOIN rooms r ON r.room_id = s.room_id
WHERE s.adopted AND s.last_seq = 0 AND (r.membership IS NULL OR r.membership <> 'join');
DELETE FROM sessions s USING pending_adoptions p WHERE s.room_id = p.room_id;

-- Who had an adopted room's earlier messages read into memory (null: nobody asked yet).
ALTER TABLE sessions ADD COLUMN history_read_by text;
UPDATE sessions SET history_read_by = started_by WHERE adopted;

-- Invite codes: the first group of the code, to tell codes apart in `!ws invites` (16 of its
-- 80 bits: the rest still cannot be guessed), and revocation.
ALTER TABLE workspace_invites ADD COLUMN hint text;
ALTER TABLE workspace_invites ADD COLUMN revoked_at timestamptz;
-- One use per `!ws join` event: handled again after a crash, the same event spends nothing more;
-- a join that failed gives its use back.
CREATE TABLE workspace_invite_uses (
    event_id   text        PRIMARY KEY,
    invite_id  bigint      NOT NULL REFERENCES workspace_invites ON DELETE CASCADE,
    user_id    text        NOT NULL,
    used_at    timestamptz NOT NULL DEFAULT now()
);
