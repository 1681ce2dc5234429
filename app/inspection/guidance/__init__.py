"""Worker step: guidance."""
