"""Spaceport builder: turns a commit into a runnable artifact. Knows nothing of the controller.

Entry point: `builder.build.build(source, kind=..., ...)`; errors are `builder.errors.BuildFailure`.
"""
