"""Commands: the catalog (data), the parser (pure) and the dispatcher with its handlers (I/O)."""
