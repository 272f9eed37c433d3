-- Which blueprint answers in a session when it is not the workspace's (`!agent use CODE[@V]`):
-- "code" follows the blueprint's current version, "code@3" pins one.
ALTER TABLE sessions ADD COLUMN agent text;
