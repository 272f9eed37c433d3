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
