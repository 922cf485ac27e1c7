"""void restated predictions

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

Keeps every existing row. A nullable `void_reason` on `latest_predictions` and `model_performance_log`:
when a restated history (a split, a corrected bar) moves a prediction's base and target closes by
factors that no single factor explains, its prices cannot be restated with the bars; the prediction
and its score are kept, marked void with the reason, and left out of every metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('latest_predictions', 'model_performance_log')


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('void_reason', sa.Text(), nullable=True))


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('void_reason')
