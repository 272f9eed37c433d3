"""Actions proposed with @act: cards, confirmation by the host, exactly-once runs."""
