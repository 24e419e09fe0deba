"""Page routers of the web UI."""
