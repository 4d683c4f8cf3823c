"""thumbdrop: drop-folder-to-cloud image agent."""

__version__ = "0.1.0"
