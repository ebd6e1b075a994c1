"""The SQL tables behind item tables. They live on their own MetaData, created by `Tables`, so
the ledger's schema module does not need to know about them."""

from __future__ import annotations

from sqlalchemy import Column, Float, MetaData, String, Table, Text

metadata = MetaData()

# Keys compare as bytes, as DynamoDB orders them: SQLite's default BINARY collation does that;
# Postgres needs "C", or the database's locale would sort 'B' after 'a'.
KeyText = Text().with_variant(Text(collation="C"), "postgresql")

table_defs = Table(
    "item_tables",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("key_schema", Text, nullable=False),  # JSON, as DynamoDB's KeySchema
    Column("attribute_definitions", Text, nullable=False),  # JSON
    Column("created_at", Float, nullable=False),
)

# All items of all tables. `sk` is "" for tables without a range key. Key values are encoded
# (headrace.tables.types.encode_key) so that SQL's text order is DynamoDB's order.
items = Table(
    "items",
    metadata,
    Column("table_name", String(255), primary_key=True),
    Column("pk", KeyText, primary_key=True),
    Column("sk", KeyText, primary_key=True),
    Column("item", Text, nullable=False),  # JSON of the attribute values
)
