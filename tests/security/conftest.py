"""Security tests run live servers; each module keeps its own (see the module-scoped fixtures)."""
