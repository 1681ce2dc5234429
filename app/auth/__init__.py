"""Users, login, sessions, API tokens and role dependencies."""
