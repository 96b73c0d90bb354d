"""A whole-customer budget's alert records move from project "*" to project "" (empty), an identity no project
can take: a project named "*" used to share them and never alerted.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("UPDATE budget_alerts SET project = '' WHERE project = '*'"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE budget_alerts SET project = '*' WHERE project = ''"))
