"""The worker flow: upload -> search -> anomaly -> guidance -> feedback."""
