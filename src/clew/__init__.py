"""clew: follow every request through the maze of services."""

__version__ = "0.1.0"
