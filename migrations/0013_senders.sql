-- Who said something in a workspace, read by skipping through this index one person at a time
-- (bot/memory/store.py, senders): memory search takes the people a question names out of it
-- before searching again by what it asks.
CREATE INDEX memory_items_sender ON memory_items (workspace_id, sender) WHERE sender IS NOT NULL;
