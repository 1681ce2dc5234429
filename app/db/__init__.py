"""Database: metadata with a naming convention, engine and sessions, ORM tables."""
