"""Letta agents (docs/spec.md §4): a blueprint with `backend: letta` answers @ask through an agent
on a Letta server (self-hosted or Letta Cloud), created and kept by Doryo with the official
letta-client SDK.

Modules, one concept each:
- client:     the SDK client for letta.base_url, and its errors as Doryo's (LettaUnavailable)
- agents:     which Letta agent a workspace and blueprint version have (letta_agents), made on
              first use; its memory blocks (persona = the blueprint's instructions, workspace =
              a summary of the workspace, updated when it changes)
- stream:     pure: Letta's streamed messages folded into text, tool calls, usage, stop reason
- turn:       one @ask answered by the agent: the sender with the question, the answer streamed
              into the Matrix answer message, read-only tools run at once, a writing tool call
              turned into an action card, usage recorded
- approvals:  the cards' side: when the host's ✅ (or ❌, !cancel, expiry) settles a Letta card,
              the outcome goes back to Letta as a tool return (or a denial) and the agent's
              continuation is posted in the card's thread; survives restarts
- service:    LettaService, what the rest of Doryo holds (ctx.letta)
"""
