"""The library's version (one place: the package, the manifests it writes and the CLI read it here)."""

__version__ = "0.1.0"
