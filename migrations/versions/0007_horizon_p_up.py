"""horizon P(up) tested against the base rate

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

Four new nullable columns, no existing row changes:

- `horizon_predictions.p_up_source`: whose P(up) was served (a candidate, or `base_rate`: the up-share
  of the h-session returns over the bars the statistical candidates were fitted on), and
  `horizon_predictions.p_ups` (JSON): every candidate's P(up) and the base rate's, which the Brier test
  reads once the row is scored. Existing rows keep NULL (never tested).
- `horizon_serving.p_up_source`, `horizon_serving.p_up_p_value`: the Brier test's choice at a horizon
  above 1 against the base rate, family-corrected as the next session's; NULL until first decided.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('horizon_predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('p_up_source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('p_ups', sa.JSON(), nullable=True))
    with op.batch_alter_table('horizon_serving', schema=None) as batch_op:
        batch_op.add_column(sa.Column('p_up_source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('p_up_p_value', sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('horizon_serving', schema=None) as batch_op:
        batch_op.drop_column('p_up_p_value')
        batch_op.drop_column('p_up_source')
    with op.batch_alter_table('horizon_predictions', schema=None) as batch_op:
        batch_op.drop_column('p_ups')
        batch_op.drop_column('p_up_source')
