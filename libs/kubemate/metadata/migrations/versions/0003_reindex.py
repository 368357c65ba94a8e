"""Re-indexing: the active vector collection per tenant and knowledge collection, the
re-index jobs that move it, and how each document was split.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written by hand to match kubemate.metadata.models.ActiveVectorCollection, Reindex and
# DocumentSplitter.


def upgrade() -> None:
    op.create_table(
        "active_collections",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("vector_collection", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("base_url", sa.String(1024), nullable=True),
        sa.Column("reindex_id", sa.String(32), nullable=True),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "collection", name="pk_active_collections"),
    )
    op.create_table(
        "reindexes",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("old_vector_collection", sa.String(255), nullable=False),
        sa.Column("new_vector_collection", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("base_url", sa.String(1024), nullable=True),
        sa.Column("progress_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("progress_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reindexes"),
    )
    op.create_index("ix_reindexes_tenant_id_collection", "reindexes", ["tenant_id", "collection"])
    op.create_table(
        "document_splitters",
        sa.Column("document_id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("document_id", name="pk_document_splitters"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_document_splitters_document_id_documents",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("document_splitters")
    op.drop_table("reindexes")
    op.drop_table("active_collections")
