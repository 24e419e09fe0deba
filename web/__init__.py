"""Spaceport web UI (server-rendered)."""
