"""The model registry's tables. They live on their own MetaData, created by `ModelRegistry`, so
the ledger's schema module does not need to know about them."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

# One row per model name. `last_version` only grows: a deleted version's number is never given
# again, so "digits:3" names one artifact forever. Every change to a model's versions or aliases
# first locks this row, which serialises them on Postgres (SQLite's writer lock already does).
models = Table(
    "models",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("last_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("format", String(16), nullable=False),  # joblib | cloudpickle | file | folder
    Column("artifact", String(1024), nullable=False),  # object key in the registry's bucket
    Column("filename", String(255), nullable=False),  # the file or folder name a load gives back
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),  # bytes: models pass 2 GiB
    Column("framework", String(64)),
    Column("libraries", Text, nullable=False),  # JSON {distribution: version}
    Column("signature", Text),  # JSON {"inputs": [{"name", "type"}], "outputs": [...]}
    Column("metrics", Text, nullable=False),  # JSON {name: number}
    Column("tags", Text, nullable=False),  # JSON {name: text}
    Column("description", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(255), nullable=False),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Every move of an alias, oldest first: what a rollback returns to.
alias_moves = Table(
    "model_alias_moves",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("version", Integer),  # None: the alias was removed
    Column("previous", Integer),  # None: the alias was new
    Column("moved_at", Float, nullable=False),
    Column("moved_by", String(255), nullable=False),
)

Index("model_alias_moves_alias", alias_moves.c.name, alias_moves.c.alias, alias_moves.c.id)
