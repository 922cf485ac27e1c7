"""global model, intervals, tested selection

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Keeps every existing row. New nullable columns on datasets (validity mask), built sets (window index
pairs, context rows), predictions and scored predictions (quantiles, chance of an up day, what was
served and why), promotions (the paired test); two new tables: `interval_state` (adaptive conformal
inference) and `serving_selection` (per-ticker serving decisions). The boolean
`model_performance_log.direction_hit` becomes `direction_score` (1 hit, 0 miss, 0.5 for a forecast of
no change, NULL when the close did not move), computed for the existing rows from their closes, so the
stored column and the metrics module agree on what a flat forecast scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUANTILE_COLUMNS = ('q025', 'q10', 'q50', 'q90', 'q975')

DIRECTION_SCORE_SQL = """
UPDATE model_performance_log SET direction_score = CASE
    WHEN actual_close = base_close THEN NULL
    WHEN predicted_close = base_close THEN 0.5
    WHEN (predicted_close > base_close) = (actual_close > base_close) THEN 1.0
    ELSE 0.0
END
"""


def upgrade() -> None:
    with op.batch_alter_table('processed_feature_data', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mask_npy', sa.LargeBinary(), nullable=True))

    with op.batch_alter_table('scaled_feature_sets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('windows_npy', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('context_npy', sa.LargeBinary(), nullable=True))

    with op.batch_alter_table('latest_predictions', schema=None) as batch_op:
        for name in QUANTILE_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('p_up', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('p_value', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('interval_source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('interval_p_value', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('unseen', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('detail', sa.JSON(), nullable=True))

    with op.batch_alter_table('model_performance_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('direction_score', sa.Double(), nullable=True))
        for name in QUANTILE_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('interval_source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('detail', sa.JSON(), nullable=True))
    op.execute(DIRECTION_SCORE_SQL)
    with op.batch_alter_table('model_performance_log', schema=None) as batch_op:
        batch_op.drop_column('direction_hit')

    with op.batch_alter_table('promotions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('test', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('p_value', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('improvement', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('improvement_low', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('improvement_high', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('selection', sa.JSON(), nullable=True))

    op.create_table('interval_state',
    sa.Column('ticker', sa.String(length=24), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('model_version', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('alpha', sa.Double(), nullable=False),
    sa.Column('n_updates', sa.Integer(), nullable=False),
    sa.Column('misses', sa.Integer(), nullable=False),
    sa.Column('last_target_date', sa.Date(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('ticker', 'level', name=op.f('pk_interval_state'))
    )
    op.create_table('serving_selection',
    sa.Column('model_version', sa.String(length=32), nullable=False),
    sa.Column('ticker', sa.String(length=24), nullable=False),
    sa.Column('point_source', sa.String(length=16), nullable=False),
    sa.Column('point_p_value', sa.Double(), nullable=True),
    sa.Column('point_skill', sa.Double(), nullable=True),
    sa.Column('interval_source', sa.String(length=16), nullable=False),
    sa.Column('interval_p_value', sa.Double(), nullable=True),
    sa.Column('interval_skill', sa.Double(), nullable=True),
    sa.Column('window_start', sa.Date(), nullable=True),
    sa.Column('window_end', sa.Date(), nullable=True),
    sa.Column('n_sessions', sa.Integer(), nullable=False),
    sa.Column('promotion_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('model_version', 'ticker', name=op.f('pk_serving_selection'))
    )


def downgrade() -> None:
    op.drop_table('serving_selection')
    op.drop_table('interval_state')
    with op.batch_alter_table('promotions', schema=None) as batch_op:
        for name in ('selection', 'improvement_high', 'improvement_low', 'improvement', 'p_value', 'test'):
            batch_op.drop_column(name)
    with op.batch_alter_table('model_performance_log', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('direction_hit', sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # A strict hit is 1.0; a flat forecast (0.5) or a flat day (NULL) was stored as a miss before.
    op.execute(
        "UPDATE model_performance_log SET direction_hit = CASE WHEN direction_score = 1.0 "
        "THEN TRUE ELSE FALSE END"
    )
    with op.batch_alter_table('model_performance_log', schema=None) as batch_op:
        for name in ('detail', 'interval_source', 'source', *reversed(QUANTILE_COLUMNS), 'direction_score'):
            batch_op.drop_column(name)
    with op.batch_alter_table('latest_predictions', schema=None) as batch_op:
        for name in (
            'detail', 'unseen', 'interval_p_value', 'interval_source', 'p_value', 'source', 'p_up',
            *reversed(QUANTILE_COLUMNS),
        ):
            batch_op.drop_column(name)
    with op.batch_alter_table('scaled_feature_sets', schema=None) as batch_op:
        batch_op.drop_column('context_npy')
        batch_op.drop_column('windows_npy')
    with op.batch_alter_table('processed_feature_data', schema=None) as batch_op:
        batch_op.drop_column('mask_npy')
