"""The Kubernetes runtime: pure object builders (objects.py), a thin client wrapper (client.py),
status interpretation (status.py) and the Runtime implementation (runtime.py)."""
