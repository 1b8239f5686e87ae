"""Storage: SQLAlchemy models, engine set-up, repositories and Alembic migrations."""
