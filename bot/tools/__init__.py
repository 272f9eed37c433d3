"""Tools the agent may use: the registry, the built-in tools and their argument parsing."""
