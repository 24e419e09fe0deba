"""Spaceport builder: turns a commit into a runnable artifact. Knows nothing of the controller."""
