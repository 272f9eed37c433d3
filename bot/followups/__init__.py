"""Follow-up reminders: posted by the bot when due, in the room or in a person's DM."""
