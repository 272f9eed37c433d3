"""Commands: the catalog (data), the parser (pure), what replies look like (outputs) and the
dispatcher with its handlers (I/O)."""
