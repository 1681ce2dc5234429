"""Deployment jobs: background work that rebuilds galleries, memory banks and manual indexes."""
