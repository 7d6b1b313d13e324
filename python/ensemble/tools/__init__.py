"""Developer tools run with `python -m ensemble.tools.<name>` (see docs/development.md)."""
