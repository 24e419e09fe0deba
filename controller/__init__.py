"""Spaceport control plane."""
