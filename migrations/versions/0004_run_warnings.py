"""run ledger warnings

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

One new nullable JSON column, `pipeline_runs.warnings`: what went wrong during a run without changing
its outcome, such as a notification that could not be delivered. Existing rows keep NULL (no warning).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('warnings', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.drop_column('warnings')
