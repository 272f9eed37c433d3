-- Letta agents (bot/letta): the agent Doryo keeps on a Letta server for each workspace and
-- blueprint version, and the Letta tool calls that wait for the host's ✅ as action cards.

-- One Letta agent per workspace, blueprint version and Letta server. A new blueprint version
-- gets a new agent (its persona and tools may differ); the old one stays on the server.
CREATE TABLE letta_agents (
    workspace_id      text        NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    blueprint         text        NOT NULL,
    blueprint_version integer     NOT NULL,
    -- letta.base_url when the agent was made: pointing Doryo at another server makes new agents.
    server            text        NOT NULL,
    agent_id          text        NOT NULL,
    -- sha256 of the workspace block's value as last written, so it is updated only on change.
    summary_sha256    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, blueprint, blueprint_version, server)
);

-- A Letta tool call turned into an action card (actions.source = 'letta'). Everything needed
-- to answer Letta once the card is decided lives here, so a restart between the card and the
-- host's ✅ loses nothing. Written just before the card's action, under the action's
-- request_event_id ("<question event>/<tool call ID>"): the row exists before anyone can ✅.
CREATE TABLE letta_approvals (
    request_key       text        PRIMARY KEY,
    agent_id          text        NOT NULL,
    tool_call_id      text        NOT NULL,
    -- The approval_request_message's ID.
    request_message_id text,
    -- Other tool calls of the same request, answered with the decision: [{tool_call_id,
    -- status, tool_return}].
    other_returns     jsonb       NOT NULL DEFAULT '[]',
    -- The @ask the turn answered, and who asked (the continuation answers them).
    question_event_id text        NOT NULL,
    asked_by          text        NOT NULL,
    blueprint         text        NOT NULL,
    blueprint_version integer     NOT NULL,
    -- Set when the outcome is being sent to Letta (one statement claims it, so it is sent
    -- once); cleared again if Letta could not be reached, so that it is tried later.
    reported_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX letta_approvals_waiting ON letta_approvals (agent_id) WHERE reported_at IS NULL;
