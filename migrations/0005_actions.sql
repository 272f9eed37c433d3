-- Actions (@act): proposals awaiting the host's confirmation, their runs, and what the built-in
-- tools make: tasks and follow-up reminders.

CREATE TABLE actions (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id    text        NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    room_id         text        NOT NULL,
    -- The message that proposed it: handled again after a crash, it finds this action.
    request_event_id text       UNIQUE,
    -- The card the bot posted (reactions and edits refer to it).
    card_event_id   text        UNIQUE,
    tool            text        NOT NULL,
    tool_version    text        NOT NULL,
    args            jsonb       NOT NULL,
    requested_by    text        NOT NULL,
    -- Where the proposal came from: a person's @act, the agent, or a Letta approval request.
    source          text        NOT NULL DEFAULT 'act',
    status          text        NOT NULL DEFAULT 'awaiting_confirm'
                    CHECK (status IN ('awaiting_confirm', 'running', 'done', 'error', 'cancelled',
                                      'expired')),
    -- Given to the executor: an idempotent executor run twice with it acts once.
    idempotency_key text        NOT NULL UNIQUE,
    confirmed_by    text,
    cancelled_by    text,
    result          jsonb,
    error           text,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    -- The host was not online when the card was posted and has been sent a DM about it.
    host_notified   boolean     NOT NULL DEFAULT false,
    -- Someone without the right reacted: the bot said so, once.
    outsider_told   boolean     NOT NULL DEFAULT false
);
CREATE INDEX actions_awaiting ON actions (expires_at) WHERE status = 'awaiting_confirm';
CREATE INDEX actions_workspace ON actions (workspace_id, created_at);

-- The audit log: every run of a tool, whoever asked, whatever came of it.
CREATE TABLE tool_runs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action_id    bigint      REFERENCES actions ON DELETE SET NULL,
    workspace_id text        NOT NULL,
    room_id      text        NOT NULL,
    tool         text        NOT NULL,
    tool_version text        NOT NULL,
    args         jsonb       NOT NULL,
    requested_by text        NOT NULL,
    confirmed_by text,
    outcome      text        NOT NULL CHECK (outcome IN ('done', 'error', 'interrupted')),
    result       jsonb,
    external_ids jsonb       NOT NULL DEFAULT '[]',
    error        text,
    duration_ms  integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tool_runs_workspace ON tool_runs (workspace_id, started_at);

CREATE TABLE tasks (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id text        NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    room_id      text        NOT NULL,
    title        text        NOT NULL,
    notes        text        NOT NULL DEFAULT '',
    assignee     text,
    due          date,
    status       text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')),
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    done_by      text,
    done_at      timestamptz,
    -- The action's idempotency key when the agent made it: a second run finds this task.
    idempotency_key text     UNIQUE
);
CREATE INDEX tasks_workspace ON tasks (workspace_id, status);

-- Reminders the bot posts when due, in a room or in a person's DM. Kept in the database, so
-- they survive restarts; a due reminder is claimed by one statement, so it is posted once.
CREATE TABLE followups (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id text        NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    room_id      text        NOT NULL,
    recipient    text,
    text         text        NOT NULL,
    due_at       timestamptz NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- When a sender took it; one taken long ago by a process that died is taken again.
    claimed_at   timestamptz,
    sent_event_id text,
    idempotency_key text     UNIQUE
);
CREATE INDEX followups_due ON followups (due_at) WHERE status IN ('pending', 'sending');
