"""Login sessions held by the server: a logout or a spell without activity ends one for good, on every server
process of the station (a copied cookie or token stops working with it); also the record of who was logged in when.
The account events (wrong passwords, new passwords, accounts closed, roles changed, by whom) become append-only,
as the audit trail is.

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
    if op.get_bind().dialect.name == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER account_events_no_{what.lower()} BEFORE {what} ON account_events "
                       "BEGIN SELECT RAISE(ABORT, 'account_events rows are append-only'); END")
    else:  # wbc_append_only(): migration 0001's
        op.execute("CREATE TRIGGER account_events_append_only BEFORE UPDATE OR DELETE ON account_events "
                   "FOR EACH ROW EXECUTE FUNCTION wbc_append_only()")
        op.execute("CREATE TRIGGER account_events_no_truncate BEFORE TRUNCATE ON account_events "
                   "FOR EACH STATEMENT EXECUTE FUNCTION wbc_append_only()")


def downgrade() -> None:
    names = ("no_update", "no_delete") if op.get_bind().dialect.name == "sqlite" else ("append_only", "no_truncate")
    for name in names:
        op.execute(f"DROP TRIGGER account_events_{name}" + ("" if op.get_bind().dialect.name == "sqlite" else " ON account_events"))
    op.drop_index("ix_logins_user_id", "logins")
    op.drop_table("logins")
