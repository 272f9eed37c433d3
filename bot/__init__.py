"""Doryo: an AI colleague inside Matrix. The bot side (everything above the Matrix transport)."""
