"""The review station's first schema: users, cases, cells, audit (append-only, enforced by triggers), signatures.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(80), nullable=False, unique=True),
                    sa.Column("role", sa.String(20), nullable=False), sa.Column("password_hash", sa.String(200), nullable=False),
                    sa.Column("active", sa.Boolean, nullable=False), sa.Column("created_at", TZ, nullable=False))
    op.create_table("cases", sa.Column("id", sa.Integer, primary_key=True), sa.Column("reference", sa.String(120), nullable=False, index=True),
                    sa.Column("version", sa.Integer, nullable=False), sa.Column("amends", sa.Integer, sa.ForeignKey("cases.id"), nullable=True),
                    sa.Column("specimen", sa.String(20), nullable=False), sa.Column("status", sa.String(20), nullable=False),
                    sa.Column("created_by", sa.String(80), nullable=False), sa.Column("created_at", TZ, nullable=False),
                    sa.Column("row_version", sa.Integer, nullable=False))
    op.create_table("cells", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
                    sa.Column("image", sa.String(200), nullable=False), sa.Column("source", sa.Text, nullable=False),
                    sa.Column("field_box", sa.JSON, nullable=True), sa.Column("model_class", sa.String(40), nullable=False),
                    sa.Column("probabilities", sa.JSON, nullable=False), sa.Column("distance", sa.Float, nullable=True),
                    sa.Column("flagged", sa.Boolean, nullable=False), sa.Column("review_reason", sa.Text, nullable=True),
                    sa.Column("current_class", sa.String(40), nullable=False), sa.Column("set_by", sa.String(80), nullable=False),
                    sa.Column("opened_by", sa.String(80), nullable=True), sa.Column("row_version", sa.Integer, nullable=False))
    op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
                    sa.Column("cell_id", sa.Integer, sa.ForeignKey("cells.id"), nullable=True),
                    sa.Column("user", sa.String(80), nullable=False), sa.Column("at", TZ, nullable=False),
                    sa.Column("action", sa.String(30), nullable=False), sa.Column("old", sa.String(80), nullable=True),
                    sa.Column("new", sa.String(80), nullable=True), sa.Column("why", sa.Text, nullable=True))
    op.create_table("signatures", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
                    sa.Column("user", sa.String(80), nullable=False), sa.Column("at", TZ, nullable=False),
                    sa.Column("meaning", sa.String(200), nullable=False), sa.Column("kind", sa.String(20), nullable=False))
    append_only("audit")
    append_only("signatures")


def append_only(table: str) -> None:
    """UPDATE and DELETE on `table` fail in the database, whoever sends them."""
    if op.get_bind().dialect.name == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{what.lower()} BEFORE {what} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} rows are append-only'); END")
    else:
        op.execute("CREATE OR REPLACE FUNCTION wbc_append_only() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql")
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION wbc_append_only()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION wbc_append_only()")


def downgrade() -> None:
    for t in ("signatures", "audit", "cells", "cases", "users"):
        op.drop_table(t)
