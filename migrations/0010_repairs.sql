-- One-off data repairs that run in the background, in bounded batches, after a migration made
-- them necessary (a long DELETE inside a migration would hold the bot's start for its length).
-- A row says the repair is done.
CREATE TABLE maintenance_done (
    name    text        PRIMARY KEY,
    done_at timestamptz NOT NULL DEFAULT now()
);

-- A reminder whose posting fails (the bot was removed from its room, the recipient refuses DMs)
-- is tried again a few times, then given up and its author told; attempts counts the failures.
ALTER TABLE followups ADD COLUMN attempts integer NOT NULL DEFAULT 0;

-- Messages redacted lately: their memories are deleted again at start (bot/history/cleanup.py).
CREATE INDEX messages_redacted ON messages (redacted_at) WHERE redacted_at IS NOT NULL;

-- Retention (bot/workspaces/retention.py): the last run per workspace, for !ws settings and the
-- admin API.
CREATE TABLE retention_runs (
    workspace_id text        PRIMARY KEY REFERENCES workspaces ON DELETE CASCADE,
    ran_at       timestamptz NOT NULL,
    cutoff       timestamptz NOT NULL,
    messages     bigint      NOT NULL,
    memories     bigint      NOT NULL
);

-- Whom the bot told that their reaction on a card changes nothing: once per person per card
-- (actions.outsider_told said it once per card, to the first person only).
CREATE TABLE action_notices (
    action_id bigint NOT NULL REFERENCES actions ON DELETE CASCADE,
    user_id   text   NOT NULL,
    PRIMARY KEY (action_id, user_id)
);

-- An @ask's answer once the model has written it (bot/agent/finished.py): an event handled again
-- (the homeserver went away before the answer's last edit, a crash) posts it without asking the
-- model again. Kept a week, like the inbox.
CREATE TABLE finished_answers (
    question_event text        PRIMARY KEY,
    room_id        text        NOT NULL,
    text           text        NOT NULL,
    model          text,
    notes          jsonb       NOT NULL DEFAULT '[]',
    sources        jsonb       NOT NULL DEFAULT '[]',
    finished_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX finished_answers_age ON finished_answers (finished_at);

-- An action's end is reported (card edited, result posted in its thread) after its status is
-- written: a crash in between left the card `running` forever. reported_at says it was done;
-- a start (and maintenance) reports what is not. summary: the result as people read it.
ALTER TABLE actions ADD COLUMN summary text;
ALTER TABLE actions ADD COLUMN reported_at timestamptz;
UPDATE actions SET reported_at = coalesce(finished_at, now())
WHERE status IN ('done', 'error', 'cancelled', 'expired');
