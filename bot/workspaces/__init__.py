"""Workspaces: a team's Matrix space, its members and their roles, invites and settings."""
