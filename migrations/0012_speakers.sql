-- The display name each person has in a room (m.room.member's displayname), so that memory search
-- knows who "Dana" is when her Matrix ID is @d.schmidt:corp (bot/memory/service.py, speakers).
-- Looked up by user: the index.
ALTER TABLE room_members ADD COLUMN displayname text;
CREATE INDEX room_members_user ON room_members (user_id);

-- What an answer showed the model from memory (org.doryo.answer.shown), kept with a finished
-- answer so that posting it again says the same.
ALTER TABLE finished_answers ADD COLUMN shown jsonb NOT NULL DEFAULT '[]';
