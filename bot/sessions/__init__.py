"""Sessions: the rooms of a workspace's space, each a conversation the agent takes part in."""
