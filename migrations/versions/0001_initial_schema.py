"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('latest_predictions',
    sa.Column('target_date', sa.Date(), nullable=False),
    sa.Column('ticker', sa.String(length=24), nullable=False),
    sa.Column('model_version', sa.String(length=32), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('base_date', sa.Date(), nullable=False),
    sa.Column('base_close', sa.Double(), nullable=False),
    sa.Column('predicted_close', sa.Double(), nullable=False),
    sa.Column('dataset_run_id', sa.String(length=64), nullable=False),
    sa.Column('pipeline_run_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('target_date', 'ticker', 'model_version', name=op.f('pk_latest_predictions'))
    )
    op.create_table('model_performance_log',
    sa.Column('target_date', sa.Date(), nullable=False),
    sa.Column('ticker', sa.String(length=24), nullable=False),
    sa.Column('model_version', sa.String(length=32), nullable=False),
    sa.Column('base_date', sa.Date(), nullable=False),
    sa.Column('base_close', sa.Double(), nullable=False),
    sa.Column('predicted_close', sa.Double(), nullable=False),
    sa.Column('actual_close', sa.Double(), nullable=False),
    sa.Column('abs_error', sa.Double(), nullable=False),
    sa.Column('abs_pct_error', sa.Double(), nullable=False),
    sa.Column('direction_hit', sa.Boolean(), nullable=False),
    sa.Column('naive_abs_error', sa.Double(), nullable=False),
    sa.Column('evaluated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('target_date', 'ticker', 'model_version', name=op.f('pk_model_performance_log'))
    )
    op.create_table('optimization_results',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('study_name', sa.String(length=128), nullable=False),
    sa.Column('best_params', sa.JSON(), nullable=False),
    sa.Column('best_value', sa.Double(), nullable=True),
    sa.Column('n_trials', sa.Integer(), nullable=False),
    sa.Column('n_complete', sa.Integer(), nullable=False),
    sa.Column('n_pruned', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_optimization_results'))
    )
    op.create_table('pipeline_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('command', sa.String(length=32), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration_s', sa.Double(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_runs'))
    )
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.create_index('ix_pipeline_runs_command_started', ['command', 'started_at'], unique=False)

    op.create_table('processed_feature_data',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('tickers', sa.JSON(), nullable=False),
    sa.Column('start_date', sa.Date(), nullable=False),
    sa.Column('end_date', sa.Date(), nullable=False),
    sa.Column('n_sessions', sa.Integer(), nullable=False),
    sa.Column('feature_names', sa.JSON(), nullable=False),
    sa.Column('feature_spec', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('dates_npy', sa.LargeBinary(), nullable=False),
    sa.Column('features_npy', sa.LargeBinary(), nullable=False),
    sa.Column('closes_npy', sa.LargeBinary(), nullable=False),
    sa.Column('target_price_npy', sa.LargeBinary(), nullable=False),
    sa.Column('target_return_npy', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_processed_feature_data'))
    )
    with op.batch_alter_table('processed_feature_data', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_processed_feature_data_content_hash'), ['content_hash'], unique=False)

    op.create_table('promotions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('candidate_version', sa.String(length=32), nullable=False),
    sa.Column('production_version', sa.String(length=32), nullable=True),
    sa.Column('metric', sa.String(length=16), nullable=False),
    sa.Column('candidate_metrics', sa.JSON(), nullable=False),
    sa.Column('production_metrics', sa.JSON(), nullable=True),
    sa.Column('naive_metrics', sa.JSON(), nullable=False),
    sa.Column('window_start', sa.Date(), nullable=True),
    sa.Column('window_end', sa.Date(), nullable=True),
    sa.Column('dataset_run_id', sa.String(length=64), nullable=True),
    sa.Column('promoted', sa.Boolean(), nullable=False),
    sa.Column('dry_run', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('pipeline_run_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotions'))
    )
    op.create_table('raw_stock_data',
    sa.Column('ticker', sa.String(length=24), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('open', sa.Double(), nullable=False),
    sa.Column('high', sa.Double(), nullable=False),
    sa.Column('low', sa.Double(), nullable=False),
    sa.Column('close', sa.Double(), nullable=False),
    sa.Column('volume', sa.BigInteger(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('ticker', 'date', name=op.f('pk_raw_stock_data'))
    )
    op.create_table('scaled_feature_sets',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('set_name', sa.String(length=16), nullable=False),
    sa.Column('n_windows', sa.Integer(), nullable=False),
    sa.Column('first_target_date', sa.Date(), nullable=True),
    sa.Column('last_target_date', sa.Date(), nullable=True),
    sa.Column('x_npy', sa.LargeBinary(), nullable=False),
    sa.Column('y_npy', sa.LargeBinary(), nullable=False),
    sa.Column('base_dates_npy', sa.LargeBinary(), nullable=False),
    sa.Column('target_dates_npy', sa.LargeBinary(), nullable=False),
    sa.Column('base_closes_npy', sa.LargeBinary(), nullable=False),
    sa.Column('target_closes_npy', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'set_name', name=op.f('pk_scaled_feature_sets'))
    )
    op.create_table('scalers',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('target_kind', sa.String(length=16), nullable=False),
    sa.Column('sequence_length', sa.Integer(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('split', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_scalers'))
    )



def downgrade() -> None:

    op.drop_table('scalers')
    op.drop_table('scaled_feature_sets')
    op.drop_table('raw_stock_data')
    op.drop_table('promotions')
    with op.batch_alter_table('processed_feature_data', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_processed_feature_data_content_hash'))

    op.drop_table('processed_feature_data')
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_pipeline_runs_command_started')

    op.drop_table('pipeline_runs')
    op.drop_table('optimization_results')
    op.drop_table('model_performance_log')
    op.drop_table('latest_predictions')

