"""horizon predictions: the close 1, 5 and 20 sessions ahead, its risk figures and its score

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Two new tables, no existing row changes:

- `horizon_predictions` [ticker, base_date, horizon, model_version]: every configured horizon's
  served forecast (horizon 1 too): the target session (the h-th exchange session after the base),
  the served quantiles as prices, P(up), VaR and Expected Shortfall at 95% and 99% (losses as
  positive simple returns), the served source, the served distribution's tail quantiles (log
  returns) and every candidate's five close quantiles (JSON), and, once matured, the real close (`actual_close`,
  `scored_at`); `void_reason` as in `latest_predictions`.
- `horizon_serving` [ticker, horizon]: the interval source served at a horizon above 1, decided by
  the tested comparison on the horizon's scored rows, and its adaptive conformal levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'horizon_predictions',
        sa.Column('ticker', sa.String(length=24), nullable=False),
        sa.Column('base_date', sa.Date(), nullable=False),
        sa.Column('horizon', sa.Integer(), nullable=False),
        sa.Column('model_version', sa.String(length=32), nullable=False),
        sa.Column('target_date', sa.Date(), nullable=False),
        sa.Column('as_of', sa.Date(), nullable=False),
        sa.Column('base_close', sa.Double(), nullable=False),
        sa.Column('q025', sa.Double(), nullable=True),
        sa.Column('q10', sa.Double(), nullable=True),
        sa.Column('q50', sa.Double(), nullable=True),
        sa.Column('q90', sa.Double(), nullable=True),
        sa.Column('q975', sa.Double(), nullable=True),
        sa.Column('p_up', sa.Double(), nullable=True),
        sa.Column('var_95', sa.Double(), nullable=True),
        sa.Column('var_99', sa.Double(), nullable=True),
        sa.Column('es_95', sa.Double(), nullable=True),
        sa.Column('es_99', sa.Double(), nullable=True),
        sa.Column('source', sa.String(length=16), nullable=True),
        sa.Column('p_value', sa.Double(), nullable=True),
        sa.Column('tail', sa.JSON(), nullable=True),
        sa.Column('candidates', sa.JSON(), nullable=True),
        sa.Column('pipeline_run_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actual_close', sa.Double(), nullable=True),
        sa.Column('scored_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('void_reason', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint(
            'ticker', 'base_date', 'horizon', 'model_version', name=op.f('pk_horizon_predictions')
        ),
    )
    with op.batch_alter_table('horizon_predictions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_horizon_predictions_target_date'), ['target_date'], unique=False)
    op.create_table(
        'horizon_serving',
        sa.Column('ticker', sa.String(length=24), nullable=False),
        sa.Column('horizon', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('p_value', sa.Double(), nullable=True),
        sa.Column('skill', sa.Double(), nullable=True),
        sa.Column('n_sessions', sa.Integer(), nullable=False),
        sa.Column('window_end', sa.Date(), nullable=True),
        sa.Column('alpha_80', sa.Double(), nullable=True),
        sa.Column('alpha_95', sa.Double(), nullable=True),
        sa.Column('aci_source', sa.String(length=16), nullable=True),
        sa.Column('last_target_date', sa.Date(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('ticker', 'horizon', name=op.f('pk_horizon_serving')),
    )


def downgrade() -> None:
    op.drop_table('horizon_serving')
    with op.batch_alter_table('horizon_predictions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_horizon_predictions_target_date'))
    op.drop_table('horizon_predictions')
