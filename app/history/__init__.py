"""Inspection history: records, filters, statistics, the dashboard."""
