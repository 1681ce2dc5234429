"""Worker step: anomaly."""
