"""Session history: every message of every session, numbered without gaps."""
