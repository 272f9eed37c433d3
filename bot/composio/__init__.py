"""Composio: accounts people link (`!connect`), recipes, and any Composio tool a blueprint allows.

- client.py: the composio SDK, off the event loop, with timeouts and errors people can read.
- tools.py: whose account runs an action, and a Composio tool by slug as a registry Tool.
- recipes.py: create_github_template, create_notion_itinerary, create_budget_sheet.
- commands.py: !connect, !connections, !disconnect.

Composio is on when `composio.api_key` is set; bot.app then builds the client (ctx.composio) and
registers the recipes.
"""
