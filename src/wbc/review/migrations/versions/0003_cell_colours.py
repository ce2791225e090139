"""Each cell keeps how far its view's colours lie from the training sources' (wbc.models.colours): a station judges
its last cells as one lab by their colours as well as their features, as `wbc predict` judges a folder.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("cells", sa.Column("colour_distance", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.drop_column("colour_distance")
