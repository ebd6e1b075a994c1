"""`Tables`: DynamoDB-style item tables stored in the ledger.

Each call is one ledger transaction. A conditional write reads the item and checks its condition
inside the same transaction that writes it: on SQLite the writer engine's BEGIN IMMEDIATE makes
the transaction exclusive; on Postgres the row is locked with SELECT … FOR UPDATE, and when it
does not exist yet the first inserter wins and the others retry against what it wrote.
"""

from __future__ import annotations

import json
import operator
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from headrace.ledger.db import create_tables
from headrace.tables import expressions as ex
from headrace.tables.errors import (
    ConditionalCheckFailed,
    TableExists,
    TableNotFound,
    TableValidationError,
    UnsupportedExpression,
)
from headrace.tables.schema import items, metadata, table_defs
from headrace.tables.types import (
    coerce_item,
    encode_key,
    from_attribute_values,
    is_attribute_value_item,
    looks_like_av,
    normalize_av,
    to_av,
)

if TYPE_CHECKING:
    from headrace.ledger import Ledger

__all__ = ["Tables"]

AVItem = dict[str, dict[str, Any]]
T = TypeVar("T")

DEFAULT_KEY_SCHEMA = (
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
)
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{3,255}$")
_MAX_ITEM_BYTES = 400 * 1024
_MAX_KEY_BYTES = {"HASH": 2048, "RANGE": 1024}
_RETURN_VALUES = {"NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"}
_WRITE_RETRIES = 8


@dataclass(frozen=True, slots=True)
class _Schema:
    name: str
    hash_name: str
    hash_type: str
    range_name: str | None
    range_type: str | None
    created_at: float

    @property
    def key_schema(self) -> list[dict[str, str]]:
        out = [{"AttributeName": self.hash_name, "KeyType": "HASH"}]
        if self.range_name:
            out.append({"AttributeName": self.range_name, "KeyType": "RANGE"})
        return out

    @property
    def attribute_definitions(self) -> list[dict[str, str]]:
        out = [{"AttributeName": self.hash_name, "AttributeType": self.hash_type}]
        if self.range_name and self.range_type:
            out.append({"AttributeName": self.range_name, "AttributeType": self.range_type})
        return out

    @property
    def key_names(self) -> tuple[str, ...]:
        return (self.hash_name, self.range_name) if self.range_name else (self.hash_name,)


def _dumps(item: AVItem) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


def _bad(subject: str, reason: str, fix: str | None = None) -> TableValidationError:
    return TableValidationError(subject, reason, fix)


class Tables:
    """DynamoDB-style tables in the ledger.

    Items go in as plain Python or as attribute values (`{"S": …}`); they come out as plain
    Python (numbers as Decimal, sets as set) unless `attribute_values=True`.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._postgres = ledger.postgres
        create_tables(metadata, ledger.engine)

    # -- plumbing ---------------------------------------------------------------------------

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one write transaction, again when a concurrent insert won the key."""
        for attempt in range(_WRITE_RETRIES):
            try:
                with self._ledger.engine.begin() as conn:
                    return work(conn)
            except IntegrityError:
                # Postgres: another transaction inserted the same key between our read (which
                # found nothing to lock) and our insert; the retry reads and locks its row.
                if attempt == _WRITE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._ledger.reader.connect() as conn:
            yield conn

    def _schema(self, conn: Connection, table: str) -> _Schema:
        row = conn.execute(select(table_defs).where(table_defs.c.name == table)).first()
        if row is None:
            raise TableNotFound(
                f"table {table!r}", "does not exist", "create it with Tables.create_table"
            )
        keys = json.loads(row.key_schema)
        types = {
            d["AttributeName"]: d["AttributeType"] for d in json.loads(row.attribute_definitions)
        }
        hash_name = next(k["AttributeName"] for k in keys if k["KeyType"] == "HASH")
        range_name = next((k["AttributeName"] for k in keys if k["KeyType"] == "RANGE"), None)
        return _Schema(
            table,
            hash_name,
            types[hash_name],
            range_name,
            types.get(range_name) if range_name else None,
            row.created_at,
        )

    def _key_part(self, schema: _Schema, role: str, name: str, value: Any) -> str:
        av = normalize_av(value) if looks_like_av(value) else to_av(value)
        wanted = schema.hash_type if role == "HASH" else schema.range_type
        if wanted not in av:
            raise _bad(
                f"key of table {schema.name!r}",
                f"{name} must be of type {wanted}, got {next(iter(av))}",
            )
        encoded = encode_key(av)
        if wanted in ("S", "B") and not encoded:
            raise _bad(f"key of table {schema.name!r}", f"{name} must not be empty")
        if len(encoded.encode()) > _MAX_KEY_BYTES[role] * (2 if wanted == "B" else 1):
            raise _bad(
                f"key of table {schema.name!r}",
                f"{name} is longer than {_MAX_KEY_BYTES[role]} bytes",
            )
        return encoded

    def _key(self, schema: _Schema, key: Mapping[str, Any], *, exact: bool = True) -> tuple:
        if not isinstance(key, Mapping):
            raise _bad(f"key of table {schema.name!r}", "must be a dict")
        missing = [n for n in schema.key_names if n not in key]
        extra = [n for n in key if n not in schema.key_names] if exact else []
        if missing or extra:
            raise _bad(
                f"key of table {schema.name!r}",
                f"must have exactly the key attributes {list(schema.key_names)}, got {sorted(key)}",
            )
        pk = self._key_part(schema, "HASH", schema.hash_name, key[schema.hash_name])
        sk = ""
        if schema.range_name:
            sk = self._key_part(schema, "RANGE", schema.range_name, key[schema.range_name])
        return pk, sk

    def _lock(self, conn: Connection, table: str, pk: str, sk: str) -> AVItem | None:
        query = select(items.c.item).where(
            items.c.table_name == table, items.c.pk == pk, items.c.sk == sk
        )
        if self._postgres:
            query = query.with_for_update()
        row = conn.execute(query).first()
        return json.loads(row.item) if row else None

    def _store(
        self, conn: Connection, table: str, pk: str, sk: str, old: Any, new: AVItem | None
    ) -> None:
        where = and_(items.c.table_name == table, items.c.pk == pk, items.c.sk == sk)
        if new is None:
            if old is not None:
                conn.execute(delete(items).where(where))
            return
        text = _dumps(new)
        if len(text.encode()) > _MAX_ITEM_BYTES:
            raise _bad(f"item in table {table!r}", "is larger than DynamoDB's 400 KB limit")
        if old is None:
            conn.execute(insert(items).values(table_name=table, pk=pk, sk=sk, item=text))
        else:
            conn.execute(update(items).where(where).values(item=text))

    @staticmethod
    def _values(values: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
        if not values:
            return {}
        for name in values:
            if not str(name).startswith(":"):
                raise _bad("ExpressionAttributeValues", f"{name!r} must start with ':'")
        if is_attribute_value_item(values):
            return {k: normalize_av(v) for k, v in values.items()}
        return {k: to_av(v) for k, v in values.items()}

    @staticmethod
    def _out(item: AVItem | None, attribute_values: bool) -> dict[str, Any] | None:
        if item is None:
            return None
        return item if attribute_values else from_attribute_values(item)

    def _check(
        self,
        table: str,
        condition: str | None,
        names: Mapping[str, str] | None,
        values: dict[str, Any],
        old: AVItem | None,
        attribute_values: bool,
    ) -> None:
        if condition is None:
            return
        tree = ex.parse_condition(condition, names, values)
        if not ex.evaluate(tree, old):
            raise ConditionalCheckFailed(
                f"table {table!r}",
                f"the conditional request failed: {condition}",
                item=self._out(old, attribute_values),
            )

    # -- tables -----------------------------------------------------------------------------

    def create_table(
        self,
        name: str,
        key_schema: Sequence[Mapping[str, str]] = DEFAULT_KEY_SCHEMA,
        attribute_definitions: Sequence[Mapping[str, str]] | None = None,
        *,
        exists_ok: bool = True,
    ) -> dict[str, Any]:
        """Create a table; with `exists_ok`, an existing table with the same keys is fine."""
        wanted = self._validate_schema(name, key_schema, attribute_definitions)

        def work(conn: Connection) -> dict[str, Any]:
            row = conn.execute(select(table_defs.c.name).where(table_defs.c.name == name)).first()
            if row is not None:
                have = self._schema(conn, name)
                same = (have.key_schema, have.attribute_definitions) == (
                    wanted.key_schema,
                    wanted.attribute_definitions,
                )
                if not exists_ok or not same:
                    raise TableExists(
                        f"table {name!r}",
                        f"already exists with key schema {have.key_schema} and attribute "
                        f"definitions {have.attribute_definitions}"
                        if not same
                        else "already exists",
                        "use another name, or delete_table first",
                    )
                return self._describe(conn, have)
            conn.execute(
                insert(table_defs).values(
                    name=name,
                    key_schema=json.dumps(wanted.key_schema),
                    attribute_definitions=json.dumps(wanted.attribute_definitions),
                    created_at=wanted.created_at,
                )
            )
            return self._describe(conn, wanted)

        return self._write(work)

    @staticmethod
    def _validate_schema(
        name: str,
        key_schema: Sequence[Mapping[str, str]],
        attribute_definitions: Sequence[Mapping[str, str]] | None,
    ) -> _Schema:
        subject = f"table {name!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise _bad(subject, "a table name is 3-255 characters of A-Z a-z 0-9 _ . -")
        try:
            roles = {k["KeyType"].upper(): k["AttributeName"] for k in key_schema}
        except (KeyError, TypeError, AttributeError):
            raise _bad(subject, "KeySchema entries need AttributeName and KeyType") from None
        if "HASH" not in roles or len(roles) != len(key_schema) or set(roles) - {"HASH", "RANGE"}:
            raise _bad(subject, "KeySchema is one HASH key and optionally one RANGE key")
        if roles.get("RANGE") == roles["HASH"]:
            raise _bad(subject, "the HASH and RANGE keys must be different attributes")
        types = {n: "S" for n in roles.values()}  # a key not defined defaults to a string
        for d in attribute_definitions or ():
            try:
                types[d["AttributeName"]] = d["AttributeType"].upper()
            except (KeyError, TypeError, AttributeError):
                raise _bad(
                    subject, "AttributeDefinitions entries need AttributeName and AttributeType"
                ) from None
        for attr in roles.values():
            if types[attr] not in ("S", "N", "B"):
                raise _bad(subject, f"key attribute {attr} must be of type S, N or B")
        extra = set(types) - set(roles.values())
        if extra:
            raise _bad(
                subject,
                f"AttributeDefinitions names {sorted(extra)}, which are not key attributes",
                "define only the key attributes (items are schemaless)",
            )
        return _Schema(
            name,
            roles["HASH"],
            types[roles["HASH"]],
            roles.get("RANGE"),
            types.get(roles["RANGE"]) if "RANGE" in roles else None,
            time.time(),
        )

    def _describe(self, conn: Connection, schema: _Schema) -> dict[str, Any]:
        count = conn.execute(
            select(func.count()).select_from(items).where(items.c.table_name == schema.name)
        ).scalar_one()
        return {
            "TableName": schema.name,
            "KeySchema": schema.key_schema,
            "AttributeDefinitions": schema.attribute_definitions,
            "TableStatus": "ACTIVE",
            "CreationDateTime": schema.created_at,
            "ItemCount": count,
        }

    def describe_table(self, name: str) -> dict[str, Any]:
        with self._read() as conn:
            return self._describe(conn, self._schema(conn, name))

    def list_tables(self) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute(select(table_defs.c.name).order_by("name"))]

    def delete_table(self, name: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
        """Delete a table and all its items; returns its description as it was."""

        def work(conn: Connection) -> dict[str, Any] | None:
            try:
                schema = self._schema(conn, name)
            except TableNotFound:
                if missing_ok:
                    return None
                raise
            described = self._describe(conn, schema)
            conn.execute(delete(items).where(items.c.table_name == name))
            conn.execute(delete(table_defs).where(table_defs.c.name == name))
            described["TableStatus"] = "DELETING"
            return described

        return self._write(work)

    # -- items ------------------------------------------------------------------------------

    def put_item(
        self,
        table: str,
        item: Mapping[str, Any],
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        return_values: str = "NONE",
        attribute_values: bool = False,
    ) -> dict[str, Any] | None:
        """Create or replace an item. Returns the old item with `return_values="ALL_OLD"`."""
        new = coerce_item(item)
        vals = self._values(values)
        if return_values not in ("NONE", "ALL_OLD"):
            raise _bad("put_item", "return_values is NONE or ALL_OLD")

        def work(conn: Connection) -> dict[str, Any] | None:
            schema = self._schema(conn, table)
            pk, sk = self._key(schema, new, exact=False)
            old = self._lock(conn, table, pk, sk)
            self._check(table, condition, names, vals, old, attribute_values)
            self._store(conn, table, pk, sk, old, new)
            return self._out(old, attribute_values) if return_values == "ALL_OLD" else None

        return self._write(work)

    def get_item(
        self, table: str, key: Mapping[str, Any], *, attribute_values: bool = False
    ) -> dict[str, Any] | None:
        """The item with this key, or None."""
        with self._read() as conn:
            schema = self._schema(conn, table)
            pk, sk = self._key(schema, key)
            row = conn.execute(
                select(items.c.item).where(
                    items.c.table_name == table, items.c.pk == pk, items.c.sk == sk
                )
            ).first()
        return self._out(json.loads(row.item), attribute_values) if row else None

    def delete_item(
        self,
        table: str,
        key: Mapping[str, Any],
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        return_values: str = "NONE",
        attribute_values: bool = False,
    ) -> dict[str, Any] | None:
        """Delete an item (no error when it is absent, unless a condition says otherwise)."""
        vals = self._values(values)
        if return_values not in ("NONE", "ALL_OLD"):
            raise _bad("delete_item", "return_values is NONE or ALL_OLD")

        def work(conn: Connection) -> dict[str, Any] | None:
            schema = self._schema(conn, table)
            pk, sk = self._key(schema, key)
            old = self._lock(conn, table, pk, sk)
            self._check(table, condition, names, vals, old, attribute_values)
            self._store(conn, table, pk, sk, old, None)
            return self._out(old, attribute_values) if return_values == "ALL_OLD" else None

        return self._write(work)

    def update_item(
        self,
        table: str,
        key: Mapping[str, Any],
        *,
        set: Mapping[str, Any] | None = None,  # DynamoDB's clause name
        remove: Sequence[str] | None = None,
        add: Mapping[str, Any] | None = None,
        delete: Mapping[str, Any] | None = None,
        expression: str | None = None,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        return_values: str = "ALL_NEW",
        attribute_values: bool = False,
    ) -> dict[str, Any] | None:
        """Change an item, creating it when absent (as DynamoDB's UpdateItem).

        Either structured changes — `set={"a": 1}` (top-level attribute names, taken literally),
        `remove=["b"]`, `add={"n": 1}`, `delete={"tags": {"x"}}` — or an UpdateExpression
        (`expression="SET a = :v ADD n :one"`) with `names`/`values`; both may be combined.
        `return_values` is DynamoDB's: NONE, ALL_OLD, UPDATED_OLD, ALL_NEW, UPDATED_NEW.
        """
        if return_values not in _RETURN_VALUES:
            raise _bad("update_item", f"return_values is one of {sorted(_RETURN_VALUES)}")
        vals = self._values(values)
        actions: list[tuple] = []
        if expression:
            actions.extend(ex.parse_update(expression, names, vals))
        for name, value in (set or {}).items():
            actions.append(("set", (name,), ("value", to_av(value))))
        actions.extend(("remove", (name,)) for name in remove or ())
        for name, value in (add or {}).items():
            actions.append(("add", (name,), ("value", to_av(value))))
        for name, value in (delete or {}).items():
            actions.append(("delete", (name,), ("value", to_av(value))))
        if not actions:
            raise _bad("update_item", "nothing to change", "pass set/remove/add or expression")

        def work(conn: Connection) -> dict[str, Any] | None:
            schema = self._schema(conn, table)
            touched = {a[1][0] for a in actions}
            for name in schema.key_names:
                if name in touched:
                    raise _bad(
                        f"table {table!r}",
                        f"cannot update attribute {name}: it is part of the key",
                    )
            pk, sk = self._key(schema, key)
            old = self._lock(conn, table, pk, sk)
            self._check(table, condition, names, vals, old, attribute_values)
            base = old if old is not None else coerce_item(key)
            new = ex.apply_update(base, actions)
            self._store(conn, table, pk, sk, old, new)
            if return_values == "NONE":
                return None
            chosen = old if return_values.endswith("OLD") else new
            if chosen is None:
                return None
            if return_values.startswith("UPDATED"):
                chosen = {k: v for k, v in chosen.items() if k in touched}
            return self._out(chosen, attribute_values)

        return self._write(work)

    # -- reading many -----------------------------------------------------------------------

    def query(
        self,
        table: str,
        key_condition: str | Mapping[str, Any],
        *,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        filter: str | None = None,  # DynamoDB's FilterExpression
        limit: int | None = None,
        scan_index_forward: bool = True,
        exclusive_start_key: Mapping[str, Any] | None = None,
        attribute_values: bool = False,
    ) -> dict[str, Any]:
        """Items of one hash key, in range-key order.

        `key_condition` is a KeyConditionExpression (`"pk = :p AND begins_with(sk, :s)"`) or a
        dict: `{"pk": "a"}`, `{"pk": "a", "sk": 5}`, `{"pk": "a", "sk": ("begins_with", "x")}`,
        `{"pk": "a", "sk": ("between", 1, 9)}`, `{"pk": "a", "sk": ("<", 5)}`.
        Returns DynamoDB's shape: Items, Count, ScannedCount and LastEvaluatedKey when there
        are more items. `limit` counts items read before `filter`, as DynamoDB's Limit does.
        """
        vals = self._values(values)
        with self._read() as conn:
            schema = self._schema(conn, table)
            hash_av, range_cond = self._key_condition(schema, key_condition, names, vals)
            pk = self._key_part(schema, "HASH", schema.hash_name, hash_av)
            where = [items.c.table_name == table, items.c.pk == pk]
            if range_cond is not None:
                where.extend(self._range_where(schema, range_cond))
            if exclusive_start_key is not None:
                start_pk, start_sk = self._key(schema, exclusive_start_key)
                if start_pk != pk:
                    raise _bad("exclusive_start_key", "belongs to another hash key")
                if schema.range_name:
                    where.append(
                        items.c.sk > start_sk if scan_index_forward else items.c.sk < start_sk
                    )
                else:
                    where.append(items.c.sk != start_sk)
            order = items.c.sk.asc() if scan_index_forward else items.c.sk.desc()
            query = select(items.c.item).where(*where).order_by(order)
            return self._page(conn, schema, query, limit, filter, names, vals, attribute_values)

    def scan(
        self,
        table: str,
        *,
        filter: str | None = None,  # DynamoDB's FilterExpression
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        limit: int | None = None,
        exclusive_start_key: Mapping[str, Any] | None = None,
        attribute_values: bool = False,
    ) -> dict[str, Any]:
        """All items of a table, in key order, in DynamoDB's Scan shape."""
        vals = self._values(values)
        with self._read() as conn:
            schema = self._schema(conn, table)
            where = [items.c.table_name == table]
            if exclusive_start_key is not None:
                start_pk, start_sk = self._key(schema, exclusive_start_key)
                where.append(
                    or_(items.c.pk > start_pk, and_(items.c.pk == start_pk, items.c.sk > start_sk))
                )
            query = select(items.c.item).where(*where).order_by(items.c.pk, items.c.sk)
            return self._page(conn, schema, query, limit, filter, names, vals, attribute_values)

    def _page(
        self,
        conn: Connection,
        schema: _Schema,
        query: Any,
        limit: int | None,
        filter_expression: str | None,
        names: Mapping[str, str] | None,
        values: dict[str, Any],
        attribute_values: bool,
    ) -> dict[str, Any]:
        if limit is not None:
            if limit < 1:
                raise _bad("limit", "must be at least 1")
            query = query.limit(limit + 1)  # one more tells whether there is a next page
        rows = [json.loads(r.item) for r in conn.execute(query)]
        more = limit is not None and len(rows) > limit
        scanned = rows[:limit] if limit is not None else rows
        kept = scanned
        if filter_expression:
            tree = ex.parse_condition(filter_expression, names, values)
            kept = [i for i in scanned if ex.evaluate(tree, i)]
        result: dict[str, Any] = {
            "Items": [self._out(i, attribute_values) for i in kept],
            "Count": len(kept),
            "ScannedCount": len(scanned),
        }
        if more:
            last = {n: scanned[-1][n] for n in schema.key_names}
            result["LastEvaluatedKey"] = self._out(last, attribute_values)
        return result

    def _key_condition(
        self,
        schema: _Schema,
        key_condition: str | Mapping[str, Any],
        names: Mapping[str, str] | None,
        values: dict[str, Any],
    ) -> tuple[dict[str, Any], tuple | None]:
        if isinstance(key_condition, str):
            tree = ex.parse_condition(key_condition, names, values)
            return ex.key_condition(tree, schema.hash_name, schema.range_name)
        if not isinstance(key_condition, Mapping) or schema.hash_name not in key_condition:
            raise _bad("key_condition", f"must name the hash key {schema.hash_name!r}")
        extra = set(key_condition) - set(schema.key_names)
        if extra:
            raise _bad("key_condition", f"names non-key attributes {sorted(extra)}")

        def av(value: Any) -> dict[str, Any]:
            return normalize_av(value) if looks_like_av(value) else to_av(value)

        hash_av = av(key_condition[schema.hash_name])
        if schema.range_name not in key_condition:
            return hash_av, None
        cond = key_condition[schema.range_name]
        if not isinstance(cond, tuple):
            return hash_av, ("=", av(cond))
        op, *args = cond
        op = str(op).lower()
        arity = {"between": 2}.get(op, 1)
        if op not in ("=", "<", "<=", ">", ">=", "between", "begins_with") or len(args) != arity:
            raise _bad(
                "key_condition",
                f"range condition {cond!r} is not one of (op, v) for = < <= > >=, "
                "('between', low, high), ('begins_with', prefix)",
            )
        return hash_av, (op, *(av(a) for a in args))

    def _range_where(self, schema: _Schema, cond: tuple) -> list[Any]:
        op, *avs = cond
        assert schema.range_name is not None
        encoded = [self._key_part(schema, "RANGE", schema.range_name, a) for a in avs]
        sk = items.c.sk
        if op == "between":
            return [sk >= encoded[0], sk <= encoded[1]]
        if op == "begins_with":
            if schema.range_type == "N":
                raise _bad("key condition", "begins_with does not apply to a number range key")
            prefix = encoded[0]
            return [sk >= prefix, func.substr(sk, 1, len(prefix)) == prefix]
        compare = {"=": operator.eq, "<": operator.lt, "<=": operator.le}
        compare.update({">": operator.gt, ">=": operator.ge})
        return [compare[op](sk, encoded[0])]

    # -- DynamoDB requests ------------------------------------------------------------------

    def execute(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run a DynamoDB API request (`PutItem`, `getItem`, …) and return its response.

        Parameters and responses use DynamoDB's names and attribute-value JSON, as the
        `arn:aws:states:::dynamodb:*` integrations of a state machine send and expect.
        """
        return _execute(self, action, dict(params))


_IGNORED = {"ConsistentRead", "ReturnConsumedCapacity", "ReturnItemCollectionMetrics"}


def _execute(tables: Tables, action: str, p: dict[str, Any]) -> dict[str, Any]:
    op = action.replace("_", "").lower()
    handled: set[str] = set()

    def take(name: str, default: Any = None) -> Any:
        handled.add(name)
        return p.get(name, default)

    def common() -> dict[str, Any]:
        return {
            "names": take("ExpressionAttributeNames"),
            "values": take("ExpressionAttributeValues"),
        }

    def finish(result: dict[str, Any]) -> dict[str, Any]:
        unknown = set(p) - handled - _IGNORED
        if unknown:
            raise UnsupportedExpression(
                f"DynamoDB {action} request", f"parameters {sorted(unknown)} are not supported"
            )
        return result

    # parameters are checked before the request runs, so nothing half-applies
    def attrs(value: Any) -> dict[str, Any]:
        return {} if value is None else {"Attributes": value}

    if op == "createtable":
        kwargs = {
            "name": take("TableName"),
            "key_schema": take("KeySchema"),
            "attribute_definitions": take("AttributeDefinitions"),
        }
        take("BillingMode")
        take("ProvisionedThroughput")
        finish({})
        return {"TableDescription": tables.create_table(**kwargs, exists_ok=False)}
    if op == "deletetable":
        name = take("TableName")
        finish({})
        return {"TableDescription": tables.delete_table(name)}
    if op == "describetable":
        name = take("TableName")
        finish({})
        return {"Table": tables.describe_table(name)}
    if op == "listtables":
        finish({})
        return {"TableNames": tables.list_tables()}
    if op == "getitem":
        table, key = take("TableName"), take("Key")
        finish({})
        found = tables.get_item(table, key, attribute_values=True)
        return {} if found is None else {"Item": found}
    if op == "putitem":
        kw = {
            "condition": take("ConditionExpression"),
            "return_values": take("ReturnValues", "NONE"),
            **common(),
        }
        table, item = take("TableName"), take("Item")
        finish({})
        return attrs(tables.put_item(table, item, attribute_values=True, **kw))
    if op == "deleteitem":
        kw = {
            "condition": take("ConditionExpression"),
            "return_values": take("ReturnValues", "NONE"),
            **common(),
        }
        table, key = take("TableName"), take("Key")
        finish({})
        return attrs(tables.delete_item(table, key, attribute_values=True, **kw))
    if op == "updateitem":
        kw = {
            "expression": take("UpdateExpression"),
            "condition": take("ConditionExpression"),
            "return_values": take("ReturnValues", "NONE"),  # DynamoDB's default, unlike ours
            **common(),
        }
        table, key = take("TableName"), take("Key")
        finish({})
        return attrs(tables.update_item(table, key, attribute_values=True, **kw))
    if op in ("query", "scan"):
        kw = {
            "filter": take("FilterExpression"),
            "limit": take("Limit"),
            "exclusive_start_key": take("ExclusiveStartKey"),
            **common(),
        }
        table = take("TableName")
        if op == "query":
            condition = take("KeyConditionExpression")
            forward = take("ScanIndexForward", True)
            finish({})
            if not condition:
                raise _bad("DynamoDB Query request", "KeyConditionExpression is required")
            return tables.query(
                table, condition, scan_index_forward=forward, attribute_values=True, **kw
            )
        finish({})
        return tables.scan(table, attribute_values=True, **kw)
    raise UnsupportedExpression(
        f"DynamoDB action {action!r}",
        "is not supported",
        "use CreateTable, DeleteTable, DescribeTable, ListTables, PutItem, GetItem, "
        "UpdateItem, DeleteItem, Query or Scan",
    )
