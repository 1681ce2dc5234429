"""Worker step: search."""
