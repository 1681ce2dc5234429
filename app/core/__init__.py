"""Shared core: settings, errors, storage, security, templating and translations."""
