"""Each cell keeps the scale (pixels a micrometre) the model framed it at: a cell cut from a smear field is
stored without the field around it, so its own red cells cannot give that scale back (the heat-map reads it).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("cells", sa.Column("px_per_um", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.drop_column("px_per_um")
