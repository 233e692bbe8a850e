"""warmctl: cache-warm container snapshots on top of podman and CRIU."""

__version__ = "0.1.0"
