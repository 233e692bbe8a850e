"""The snapshot lifecycle: taking, resuming, verifying and removing snapshots, and the
volumes that go with them, a module per job (docs/design.md). A docstring only.
"""
