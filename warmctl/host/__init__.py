"""The host: its facts, podman info's cache, comparing hosts, which CRIU runs on which kernel,
failure hints, and doctor.

Empty on purpose: podman.py imports diagnose.py (pure), which must not pull in doctor.py."""
