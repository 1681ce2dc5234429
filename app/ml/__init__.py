"""ML engines: no FastAPI or SQLAlchemy in here. Each engine loads once and has one main verb."""
