"""gateway_logs: request_id is the primary key, and the id column goes.

Each logged row wrote two B-trees besides its created_at index: the primary key on a serial `id` (and the
sequence behind it), and the unique index on request_id, which the writer needs anyway (a spool replay skips the
rows already stored by it). Nothing reads `id`: a log row is found by its request_id (the id the client was given,
X-Request-Id) or by time. With request_id as the key, PostgreSQL's CPU per logged row, in batches of 200 into a
table growing to 300,000 rows, went from 11.8 to 10.6 µs (and each row is 8 bytes and one index entry smaller).

On PostgreSQL the upgrade builds the primary key's index anew, holding the table's lock while it does: seconds
for millions of rows. Requests go on meanwhile; their rows wait in the writer's queue, or its spool. The
downgrade gives the rows new ids: in request_id order on PostgreSQL (time order, for the ids the gateway makes),
in the table's row order on SQLite.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("pk_gateway_logs", "gateway_logs", type_="primary")
        op.drop_column("gateway_logs", "id")  # and the sequence it owns
        op.drop_constraint("uq_gateway_logs_request_id", "gateway_logs", type_="unique")
        op.create_primary_key("pk_gateway_logs", "gateway_logs", ["request_id"])
        return
    # SQLite alters a table by copying it into a new one
    with op.batch_alter_table("gateway_logs", recreate="always") as batch:
        batch.drop_constraint("uq_gateway_logs_request_id", type_="unique")
        batch.drop_column("id")
        batch.create_primary_key("pk_gateway_logs", ["request_id"])


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("pk_gateway_logs", "gateway_logs", type_="primary")
        op.create_unique_constraint("uq_gateway_logs_request_id", "gateway_logs", ["request_id"])
        op.add_column("gateway_logs", sa.Column("id", sa.BigInteger, nullable=True))
        op.execute("CREATE SEQUENCE gateway_logs_id_seq OWNED BY gateway_logs.id")
        op.execute("UPDATE gateway_logs SET id = n FROM (SELECT request_id, nextval('gateway_logs_id_seq') AS n "
                   "FROM (SELECT request_id FROM gateway_logs ORDER BY request_id) o) s "
                   "WHERE gateway_logs.request_id = s.request_id")
        op.execute("ALTER TABLE gateway_logs ALTER COLUMN id SET DEFAULT nextval('gateway_logs_id_seq'), "
                   "ALTER COLUMN id SET NOT NULL")
        op.create_primary_key("pk_gateway_logs", "gateway_logs", ["id"])
        return
    with op.batch_alter_table("gateway_logs", recreate="always") as batch:
        batch.drop_constraint("pk_gateway_logs", type_="primary")
        batch.add_column(sa.Column("id", Id, nullable=True))
        batch.create_unique_constraint("uq_gateway_logs_request_id", ["request_id"])
    op.execute("UPDATE gateway_logs SET id = rowid")
    with op.batch_alter_table("gateway_logs", recreate="always") as batch:
        batch.alter_column("id", existing_type=Id, nullable=False)
        batch.create_primary_key("pk_gateway_logs", ["id"])
