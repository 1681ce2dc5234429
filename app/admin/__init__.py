"""The admin console pages (over the same services as the API)."""
