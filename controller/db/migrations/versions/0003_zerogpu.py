"""zerogpu: the ZeroGPU device pool, GPU-second quota overrides and per-call leases (issue 15)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('zerogpu_devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('accelerator', sa.String(length=32), nullable=False),
    sa.Column('device_index', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=100), nullable=False),
    sa.Column('node', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('accelerator', 'device_index'),
    sa.UniqueConstraint('uuid')
    )
    with op.batch_alter_table('zerogpu_devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_zerogpu_devices_accelerator'), ['accelerator'], unique=False)
    op.create_table('zerogpu_quotas',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('seconds_per_day', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id')
    )
    op.create_table('zerogpu_leases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('space_id', sa.Integer(), nullable=True),
    sa.Column('instance', sa.String(length=120), nullable=False),
    sa.Column('device_uuid', sa.String(length=100), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('duration', sa.Integer(), nullable=False),
    sa.Column('granted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('allowed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('charged_seconds', sa.Float(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['accounts.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('zerogpu_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_zerogpu_leases_space_id'), ['space_id'], unique=False)
        batch_op.create_index('ix_zerogpu_leases_subject_released', ['subject', 'released_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('zerogpu_leases', schema=None) as batch_op:
        batch_op.drop_index('ix_zerogpu_leases_subject_released')
        batch_op.drop_index(batch_op.f('ix_zerogpu_leases_space_id'))
    op.drop_table('zerogpu_leases')
    op.drop_table('zerogpu_quotas')
    with op.batch_alter_table('zerogpu_devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_zerogpu_devices_accelerator'))
    op.drop_table('zerogpu_devices')
