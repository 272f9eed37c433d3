"""Rooms the bot is in: what it knows of them (store), who is in them (members), what it does
when invited or given power (joining), its direct chats (direct), whether a person is here
(presence), and the typing and status it shows while it works (activity)."""
