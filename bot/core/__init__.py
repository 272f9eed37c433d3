"""The ground floor every feature stands on: configuration, the database and its migrations,
the error tree, logging, metrics, the sentences people read, replies, background tasks, the
inbox of events and its dispatcher, the pure event router, the embedded PostgreSQL and power
levels. Nothing here imports a feature (tests/unit/test_layers.py)."""
