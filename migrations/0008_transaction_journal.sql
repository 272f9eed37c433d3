-- The homeserver gets its 200 once a transaction's events are stored as one row (the journal),
-- not once each is its own indexed inbox_events row: one short text value is written in a
-- fraction of the time, and Synapse sends nothing else until it has its answer. The bot unpacks
-- journal rows into inbox_events right after the 200 (and at start, for a crash in between);
-- unpacking clears `events`, in the same statement that inserts them.
ALTER TABLE appservice_transactions
    -- Arrival order: transactions are unpacked in it, so each room's events keep their order.
    ADD COLUMN seq          bigint GENERATED ALWAYS AS IDENTITY,
    -- JSON array of the transaction's well-formed room events until unpacked, then null.
    ADD COLUMN events       text,
    -- Why the events could not be unpacked. They stay in `events` for a person to look at;
    -- the rest of the journal goes on.
    ADD COLUMN unpack_error text;

CREATE INDEX appservice_transactions_to_unpack ON appservice_transactions (seq)
    WHERE events IS NOT NULL AND unpack_error IS NULL;
