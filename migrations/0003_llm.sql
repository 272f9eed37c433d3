-- The LLM router and agent blueprints (SPEC §4): every model call with its tokens and cost, and
-- blueprints with their immutable versions. workspace_id is opaque here (workspaces live
-- elsewhere), so it has no foreign key.

-- One row per call to a provider: each retry and each fallback is a call of its own. A call that
-- failed has outcome <> 'ok' and the (secret-free) error. cost_usd is null when the model's price
-- is unknown. input_tokens counts cached tokens too; cached_tokens and cache_write_tokens are
-- parts of it.
CREATE TABLE llm_usage (
    id                 bigint        GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at         timestamptz   NOT NULL DEFAULT now(),
    provider           text          NOT NULL,
    model              text          NOT NULL,
    input_tokens       integer       NOT NULL DEFAULT 0,
    output_tokens      integer       NOT NULL DEFAULT 0,
    cached_tokens      integer       NOT NULL DEFAULT 0,
    cache_write_tokens integer       NOT NULL DEFAULT 0,
    cost_usd           numeric(18, 10),
    latency_ms         integer       NOT NULL,
    -- Time to the first streamed token; null for calls that did not stream or got none.
    ttft_ms            integer,
    streamed           boolean       NOT NULL,
    agent              text,
    blueprint_version  integer,
    workspace_id       text,
    room_id            text,
    user_id            text,
    outcome            text          NOT NULL
                                     CHECK (outcome IN ('ok', 'error', 'timeout', 'rate_limited',
                                                        'cancelled')),
    error              text
);
-- Monthly budgets and `!usage` per workspace; the admin API over every workspace by time.
CREATE INDEX llm_usage_workspace ON llm_usage (workspace_id, created_at);
CREATE INDEX llm_usage_created ON llm_usage (created_at);

-- A blueprint: its code, and the version in force. Rollback moves current_version back to an
-- earlier version; it never deletes or changes one.
CREATE TABLE blueprints (
    code            text        PRIMARY KEY,
    current_version integer     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Every version ever made, immutable. `spec` is what was written (with `extends`); `resolved`
-- is the blueprint with its parents merged in, as they were when this version was made.
-- source: file (blueprints/*.yaml), command (!blueprint), api (admin API). file_sha256: the
-- YAML file's hash for versions loaded from a file, so that a changed file makes a new version
-- and an unchanged one does not undo edits made since.
CREATE TABLE blueprint_versions (
    code           text        NOT NULL REFERENCES blueprints (code) ON DELETE CASCADE
                               DEFERRABLE INITIALLY DEFERRED,
    version        integer     NOT NULL CHECK (version > 0),
    spec           jsonb       NOT NULL,
    resolved       jsonb       NOT NULL,
    extends        text,
    extends_version integer,
    source         text        NOT NULL CHECK (source IN ('file', 'command', 'api')),
    file_sha256    text,
    created_by     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code, version)
);

ALTER TABLE blueprints
    ADD CONSTRAINT blueprints_current_version
    FOREIGN KEY (code, current_version) REFERENCES blueprint_versions (code, version)
    DEFERRABLE INITIALLY DEFERRED;

-- Every change of a blueprint's current version (a new version, or a rollback), for history.
CREATE TABLE blueprint_pins (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code       text        NOT NULL REFERENCES blueprints (code) ON DELETE CASCADE,
    version    integer     NOT NULL,
    action     text        NOT NULL CHECK (action IN ('create', 'edit', 'rollback')),
    pinned_by  text,
    pinned_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX blueprint_pins_code ON blueprint_pins (code, id);
