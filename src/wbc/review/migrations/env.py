"""Alembic environment: run by wbc.review.db.upgrade with an open connection (no alembic.ini)."""

from alembic import context

from wbc.review.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
