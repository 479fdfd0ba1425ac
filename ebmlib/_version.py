"""The version of ebmlib (one place; the package and the pipeline read it from here)."""

__version__ = "0.1.0"
