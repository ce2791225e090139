"""Wrong passwords are recorded per user name, so a name guessed at is refused for a while on every server process
of the station (one database), and the attempts stay on record.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table("login_failures",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(80), nullable=False),
                    sa.Column("at", sa.DateTime(timezone=True), nullable=False))
    op.create_index("ix_login_failures_name", "login_failures", ["name"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_name", "login_failures")
    op.drop_table("login_failures")
