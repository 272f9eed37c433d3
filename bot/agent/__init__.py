"""The agent in the rooms: which blueprint answers, what it is told, and how @ask streams back."""
