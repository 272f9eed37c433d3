"""End-to-end encryption: the bot's device (machine), which rooms are encrypted (rooms), and
what a person is told about a message the bot cannot read (undecryptable)."""
