"""space storage: persistent /data (tier and directory key) and read-only volumes per space (issue 16)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('spaces') as batch:
        batch.add_column(sa.Column('storage_tier', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('storage_key', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('volumes', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('spaces') as batch:
        batch.drop_column('volumes')
        batch.drop_column('storage_key')
        batch.drop_column('storage_tier')
