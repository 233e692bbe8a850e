"""podman: the process runner (runner.py), the adapter's types and interface (types.py), and
the adapter that drives the real program (cli.py). A docstring only: importers name the module.
"""
