"""Each cell keeps how its scale was known (measured from its red cells, the run's, assumed, ...): a case judged for
its colours flags a "no white cell" on a smear whose red cells were read, as `wbc predict` does, since the stain rule
that found nothing reads a nucleus as the training labs' stains show one.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("cells", sa.Column("scale", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.drop_column("scale")
