-- Where each person last read each room the bot is in: their latest public read receipt of the
-- main timeline (receipts reach the appservice as ephemeral events). `!catchup` starts there.
CREATE TABLE read_markers (
    room_id    text        NOT NULL,
    user_id    text        NOT NULL,
    event_id   text        NOT NULL,
    read_at    timestamptz NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
