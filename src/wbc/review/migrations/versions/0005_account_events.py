"""What happened to each account: wrong passwords (so a name guessed at is refused for a while on every server
process of the station, one database), new passwords, accounts closed and opened, roles changed, and by whom.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table("account_events",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(80), nullable=False),
                    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("event", sa.String(40), nullable=False),
                    sa.Column("by", sa.String(120), nullable=True))
    op.create_index("ix_account_events_name", "account_events", ["name"])


def downgrade() -> None:
    op.drop_index("ix_account_events_name", "account_events")
    op.drop_table("account_events")
