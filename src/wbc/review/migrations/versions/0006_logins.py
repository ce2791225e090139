"""Login sessions held by the server: a logout or a spell without activity ends one for good, on every server
process of the station (a copied cookie or token stops working with it); also the record of who was logged in when.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table("logins",
                    sa.Column("id", sa.String(32), primary_key=True),
                    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
                    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
                    sa.Column("ended", sa.String(40), nullable=True))
    op.create_index("ix_logins_user_id", "logins", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_logins_user_id", "logins")
    op.drop_table("logins")
