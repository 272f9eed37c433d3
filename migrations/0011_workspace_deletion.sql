-- `!ws delete` (bot/data/deletion.py): a host's request to delete a workspace, its card, and
-- what the deletion did. No foreign key to workspaces: the record outlives the workspace it
-- names (its ID and counts, who asked and who confirmed; nothing the team said).
CREATE TABLE workspace_deletions (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id     text        NOT NULL,
    room_id          text        NOT NULL,
    request_event_id text        NOT NULL UNIQUE,
    card_event_id    text        UNIQUE,
    requested_by     text        NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    status           text        NOT NULL DEFAULT 'awaiting_confirm'
                     CHECK (status IN ('awaiting_confirm', 'running', 'done', 'cancelled',
                                       'expired')),
    decided_by       text,
    decided_at       timestamptz,
    -- Filled in the transaction that deletes the data: the rooms to leave (the space first) and
    -- the Letta agents to end afterwards (a crash in between finishes them at the next start).
    rooms            text[],
    letta_agents     text[],
    counts           jsonb,
    -- Who was told that their reaction changes nothing (once each); emptied once decided.
    told             text[]      NOT NULL DEFAULT '{}',
    finished_at      timestamptz
);
-- At most one open request per workspace.
CREATE UNIQUE INDEX workspace_deletions_open ON workspace_deletions (workspace_id)
WHERE status IN ('awaiting_confirm', 'running');
