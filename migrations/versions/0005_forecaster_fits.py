"""forecaster fits: scheduled refits of the statistical interval candidates

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

Two new nullable columns on `serving_selection` (`p_up_source`, `p_up_p_value`: whose chance of an
up session is served, decided by a Brier-score test against the base rate); the network's intervals,
served so far under the source name "model", are renamed "network" in `serving_selection` and
`interval_state`. One new table, `forecaster_fits` [ticker, forecaster, fit_end]: the parameters (JSON) of each
statistical candidate (GARCH, GJR, range-based HAR, ...) refitted from the stored bars every
`[forecasters] refit_sessions` sessions. No existing row changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The network's intervals were served under the name "model"; every candidate now has its own.
    op.execute("UPDATE serving_selection SET interval_source = 'network' WHERE interval_source = 'model'")
    op.execute("UPDATE interval_state SET source = 'network' WHERE source = 'model'")
    with op.batch_alter_table('serving_selection', schema=None) as batch_op:
        batch_op.add_column(sa.Column('p_up_source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('p_up_p_value', sa.Double(), nullable=True))
    op.create_table(
        'forecaster_fits',
        sa.Column('ticker', sa.String(length=24), nullable=False),
        sa.Column('forecaster', sa.String(length=16), nullable=False),
        sa.Column('fit_end', sa.Date(), nullable=False),
        sa.Column('fit_start', sa.Date(), nullable=True),
        sa.Column('n_sessions', sa.Integer(), nullable=False),
        sa.Column('params', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('ticker', 'forecaster', 'fit_end', name=op.f('pk_forecaster_fits')),
    )


def downgrade() -> None:
    op.execute("UPDATE serving_selection SET interval_source = 'model' WHERE interval_source = 'network'")
    op.execute("UPDATE interval_state SET source = 'model' WHERE source = 'network'")
    op.drop_table('forecaster_fits')
    with op.batch_alter_table('serving_selection', schema=None) as batch_op:
        batch_op.drop_column('p_up_p_value')
        batch_op.drop_column('p_up_source')
