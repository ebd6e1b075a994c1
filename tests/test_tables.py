import random
import threading
from decimal import Decimal

import pytest

from headrace.errors import HeadraceError
from headrace.tables import (
    ConditionalCheckFailed,
    TableExists,
    TableNotFound,
    Tables,
    TableValidationError,
    UnsupportedExpression,
    from_attribute_values,
    to_attribute_values,
)
from headrace.tables.types import encode_number_key, to_decimal


@pytest.fixture
def tables(ledger):
    t = Tables(ledger)
    t.create_table("tasks")
    return t


# -- converters (no database) --------------------------------------------------------------


def test_to_attribute_values_matches_dynamodb_types():
    item = {
        "s": "x",
        "i": 3,
        "f": 1.5,
        "d": Decimal("10.50"),
        "t": True,
        "n": None,
        "b": b"\x00\xff",
        "l": [1, "a", [None]],
        "m": {"k": {"deep": False}},
        "ss": {"b", "a"},
        "ns": {3, 1, Decimal("2.0")},
        "bs": {b"x"},
    }
    av = to_attribute_values(item)
    assert av == {
        "s": {"S": "x"},
        "i": {"N": "3"},
        "f": {"N": "1.5"},
        "d": {"N": "10.5"},
        "t": {"BOOL": True},
        "n": {"NULL": True},
        "b": {"B": "AP8="},
        "l": {"L": [{"N": "1"}, {"S": "a"}, {"L": [{"NULL": True}]}]},
        "m": {"M": {"k": {"M": {"deep": {"BOOL": False}}}}},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2", "3"]},
        "bs": {"BS": ["eA=="]},
    }
    back = from_attribute_values(av)
    assert back["i"] == Decimal(3) and isinstance(back["i"], Decimal)
    assert back["b"] == b"\x00\xff" and back["ns"] == {Decimal(1), Decimal(2), Decimal(3)}
    assert back["l"] == [Decimal(1), "a", [None]] and back["m"] == {"k": {"deep": False}}


def test_converters_reject_what_dynamodb_rejects():
    for bad in ({"x": set()}, {"x": {1, "a"}}, {"x": float("nan")}, {"x": object()}):
        with pytest.raises(TableValidationError):
            to_attribute_values(bad)
    with pytest.raises(TableValidationError):
        to_decimal("1" * 39)  # 39 significant digits
    assert to_decimal("1" + "0" * 40) == Decimal("1E+40")  # trailing zeros are not significant


def test_number_key_encoding_sorts_numerically():
    rng = random.Random(7)
    numbers = [Decimal(0), Decimal("-1.2"), Decimal("-1.23"), Decimal("1E-130"), Decimal("9E+125")]
    for _ in range(500):
        numbers.append(Decimal(rng.uniform(-1e6, 1e6)).quantize(Decimal("0.001")))
        numbers.append(Decimal(rng.randint(-50, 50)))
    numbers = [to_decimal(n) for n in numbers]
    by_text = sorted(numbers, key=lambda n: encode_number_key(n).encode())
    assert by_text == sorted(numbers)
    assert encode_number_key(to_decimal("1.50")) == encode_number_key(to_decimal(1.5))


# -- tables --------------------------------------------------------------------------------


def test_create_describe_list_delete(ledger):
    t = Tables(ledger)
    desc = t.create_table(
        "scores",
        [
            {"AttributeName": "player", "KeyType": "HASH"},
            {"AttributeName": "at", "KeyType": "RANGE"},
        ],
        [
            {"AttributeName": "player", "AttributeType": "S"},
            {"AttributeName": "at", "AttributeType": "N"},
        ],
    )
    assert desc["TableStatus"] == "ACTIVE" and desc["ItemCount"] == 0
    # idempotent with the same schema, a clear error with another
    t.create_table(
        "scores",
        [
            {"AttributeName": "player", "KeyType": "HASH"},
            {"AttributeName": "at", "KeyType": "RANGE"},
        ],
        [
            {"AttributeName": "player", "AttributeType": "S"},
            {"AttributeName": "at", "AttributeType": "N"},
        ],
    )
    with pytest.raises(TableExists, match="already exists with key schema") as err:
        t.create_table("scores", [{"AttributeName": "player", "KeyType": "HASH"}])
    assert err.value.error_name == "DynamoDB.ResourceInUseException"
    t.create_table("other")
    assert t.list_tables() == ["other", "scores"]
    t.put_item("scores", {"player": "p", "at": 1})
    assert t.describe_table("scores")["ItemCount"] == 1
    t.delete_table("scores")
    assert t.list_tables() == ["other"]
    with pytest.raises(TableNotFound) as err:
        t.get_item("scores", {"player": "p", "at": 1})
    assert err.value.error_name == "DynamoDB.ResourceNotFoundException"
    assert isinstance(err.value, HeadraceError)


def test_bad_keys_are_clear_errors(tables):
    with pytest.raises(TableValidationError, match="exactly the key attributes"):
        tables.get_item("tasks", {"pk": "a"})
    with pytest.raises(TableValidationError, match="must be of type S"):
        tables.put_item("tasks", {"pk": 1, "sk": "x"})
    with pytest.raises(TableValidationError, match="must not be empty"):
        tables.put_item("tasks", {"pk": "", "sk": "x"})


# -- items ---------------------------------------------------------------------------------


def test_put_get_plain_and_attribute_values(tables):
    tables.put_item("tasks", {"pk": "a", "sk": "1", "n": 5, "tags": {"x"}})
    tables.put_item("tasks", {"pk": {"S": "a"}, "sk": {"S": "2"}, "n": {"N": "7.0"}})
    assert tables.get_item("tasks", {"pk": "a", "sk": "1"}) == {
        "pk": "a",
        "sk": "1",
        "n": Decimal(5),
        "tags": {"x"},
    }
    assert tables.get_item("tasks", {"pk": "a", "sk": "2"}, attribute_values=True) == {
        "pk": {"S": "a"},
        "sk": {"S": "2"},
        "n": {"N": "7"},
    }
    assert tables.get_item("tasks", {"pk": "a", "sk": "3"}) is None
    old = tables.put_item("tasks", {"pk": "a", "sk": "1"}, return_values="ALL_OLD")
    assert old["n"] == 5
    assert tables.delete_item("tasks", {"pk": "a", "sk": "1"}, return_values="ALL_OLD")["sk"] == "1"
    assert tables.get_item("tasks", {"pk": "a", "sk": "1"}) is None


def test_conditional_put_and_delete(tables):
    key = {"pk": "job", "sk": "lock"}
    tables.put_item("tasks", {**key, "owner": "me"}, condition="attribute_not_exists(pk)")
    with pytest.raises(ConditionalCheckFailed) as err:
        tables.put_item("tasks", {**key, "owner": "you"}, condition="attribute_not_exists(pk)")
    assert err.value.error_name == "DynamoDB.ConditionalCheckFailedException"
    assert err.value.item["owner"] == "me"
    with pytest.raises(ConditionalCheckFailed):
        tables.delete_item(
            "tasks", key, condition="#o = :o", names={"#o": "owner"}, values={":o": "you"}
        )
    tables.delete_item(
        "tasks", key, condition="#o = :o", names={"#o": "owner"}, values={":o": "me"}
    )
    assert tables.get_item("tasks", key) is None


def test_update_expression(tables):
    key = {"pk": "a", "sk": "b"}
    new = tables.update_item(
        "tasks",
        key,
        expression=(
            "SET #s = :s, n = if_not_exists(n, :zero) + :one,"
            " l = list_append(if_not_exists(l, :empty), :l) ADD c :one, tags :t"
        ),
        names={"#s": "status"},
        values={
            ":s": "RUNNING",
            ":zero": 0,
            ":one": 1,
            ":empty": [],
            ":l": [1, 2],
            ":t": {"x", "y"},
        },
    )
    assert new == {
        "pk": "a",
        "sk": "b",
        "status": "RUNNING",
        "n": 1,
        "l": [1, 2],
        "c": 1,
        "tags": {"x", "y"},
    }
    updated = tables.update_item(
        "tasks",
        key,
        expression="SET n = n - :one, m = :m, l[5] = :nine REMOVE #s, l[0] DELETE tags :x",
        names={"#s": "status"},
        values={":one": 1, ":m": {"inner": {"v": 1}}, ":nine": 9, ":x": {"x"}},
        return_values="UPDATED_NEW",
    )
    assert updated == {"n": 0, "m": {"inner": {"v": 1}}, "l": [2, 9], "tags": {"y"}}
    tables.update_item("tasks", key, expression="SET m.inner.v = :two", values={":two": 2})
    old = tables.update_item(
        "tasks",
        key,
        expression="REMOVE m.inner DELETE tags :y",
        values={":y": {"y"}},
        return_values="ALL_OLD",
    )
    assert old["m"] == {"inner": {"v": 2}}
    item = tables.get_item("tasks", key)
    assert item["m"] == {} and "tags" not in item and "status" not in item
    # structured form
    tables.update_item("tasks", key, set={"a b": "spaced"}, remove=["m"], add={"c": 10})
    item = tables.get_item("tasks", key)
    assert item["a b"] == "spaced" and item["c"] == 11 and "m" not in item


def test_update_errors(tables):
    key = {"pk": "a", "sk": "b"}
    with pytest.raises(TableValidationError, match="part of the key"):
        tables.update_item("tasks", key, set={"pk": "z"})
    with pytest.raises(TableValidationError, match="does not exist in the item"):
        tables.update_item("tasks", key, expression="SET a = b")
    with pytest.raises(TableValidationError, match="not in ExpressionAttributeValues"):
        tables.update_item("tasks", key, expression="SET a = :missing")
    with pytest.raises(UnsupportedExpression, match="'nope'"):
        tables.update_item("tasks", key, expression="SET a = nope(b)")
    with pytest.raises(TableValidationError, match="overlapping"):
        tables.update_item("tasks", key, expression="SET a = :v REMOVE a", values={":v": 1})
    with pytest.raises(TableValidationError, match="expected SET"):
        tables.update_item("tasks", key, expression="UPSERT a = :v", values={":v": 1})
    with pytest.raises(TableValidationError, match="ADD of a N to a S"):
        tables.put_item("tasks", {**key, "s": "text"})
        tables.update_item("tasks", key, add={"s": 1})
    assert tables.get_item("tasks", key) == {**key, "s": "text"}  # failed updates changed nothing


def test_condition_expressions(tables):
    key = {"pk": "c", "sk": "1"}
    tables.put_item(
        "tasks", {**key, "n": 5, "s": "hello", "tags": {"a", "b"}, "l": [1, 2, 3], "nil": None}
    )
    values = {
        ":3": 3,
        ":5": 5,
        ":9": 9,
        ":he": "he",
        ":a": "a",
        ":z": "z",
        ":s": "S",
        ":ok": "ok",
    }

    def holds(condition):
        try:
            tables.update_item(
                "tasks",
                key,
                set={"probe": 1},
                condition=condition,
                values=values,
                return_values="NONE",
            )
            return True
        except ConditionalCheckFailed:
            return False

    assert holds("n = :5 AND s = :he") is False
    assert holds("n = :5 AND begins_with(s, :he)")
    assert holds("n BETWEEN :3 AND :9 AND NOT n > :5")
    assert holds("n IN (:3, :9) OR contains(tags, :a)")
    assert holds("NOT (contains(tags, :z) OR size(l) > :3)")
    assert holds("size(s) = :5 AND attribute_type(s, :s) AND attribute_exists(nil)")
    assert holds("missing <> :5 AND NOT missing = :5 AND NOT missing < :5")
    assert holds("n < :he") is False  # different types never order
    assert holds("attribute_not_exists(missing) and n >= :5 or s = :ok")  # keywords any case
    with pytest.raises(TableValidationError, match="unexpected"):
        holds("n = :5 :3")


def test_query_number_range_key(ledger):
    t = Tables(ledger)
    t.create_table(
        "series",
        [{"AttributeName": "id", "KeyType": "HASH"}, {"AttributeName": "t", "KeyType": "RANGE"}],
        [
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "t", "AttributeType": "N"},
        ],
    )
    ts = [-100, -1.5, -1.25, 0, 0.001, 2, 10, 10.5, 1e20]
    for x in reversed(ts):
        t.put_item("series", {"id": "s", "t": x, "v": str(x)})
    t.put_item("series", {"id": "other", "t": 1})
    got = t.query("series", {"id": "s"})
    assert [i["t"] for i in got["Items"]] == [to_decimal(x) for x in ts]
    assert got["Count"] == len(ts) and "LastEvaluatedKey" not in got
    got = t.query(
        "series", "id = :i AND t BETWEEN :lo AND :hi", values={":i": "s", ":lo": -1.5, ":hi": 2}
    )
    assert [i["t"] for i in got["Items"]] == [to_decimal(x) for x in (-1.5, -1.25, 0, 0.001, 2)]
    got = t.query("series", {"id": "s", "t": ("<", 0)}, scan_index_forward=False)
    assert [i["t"] for i in got["Items"]] == [to_decimal(x) for x in (-1.25, -1.5, -100)]
    # pages of 4, both directions
    for forward in (True, False):
        seen, start = [], None
        while True:
            page = t.query(
                "series",
                {"id": "s"},
                limit=4,
                exclusive_start_key=start,
                scan_index_forward=forward,
            )
            seen += [i["t"] for i in page["Items"]]
            start = page.get("LastEvaluatedKey")
            if start is None:
                break
        expected = [to_decimal(x) for x in ts]
        assert seen == (expected if forward else expected[::-1])


def test_query_strings_filter_and_scan(tables):
    for sk in ["b#1", "a#2", "a#1", "a", "B", "ä", "a#10"]:
        tables.put_item("tasks", {"pk": "p", "sk": sk, "size": len(sk)})
    tables.put_item("tasks", {"pk": "q", "sk": "a#1", "size": 3})
    got = tables.query("tasks", "pk = :p AND begins_with(sk, :a)", values={":p": "p", ":a": "a#"})
    assert [i["sk"] for i in got["Items"]] == ["a#1", "a#10", "a#2"]
    # UTF-8 byte order: upper case before lower case, ä after z
    assert [i["sk"] for i in tables.query("tasks", {"pk": "p"})["Items"]] == [
        "B",
        "a",
        "a#1",
        "a#10",
        "a#2",
        "b#1",
        "ä",
    ]
    got = tables.query(
        "tasks", {"pk": "p", "sk": (">=", "a#2")}, filter="size > :n", values={":n": 2}, limit=2
    )
    assert [i["sk"] for i in got["Items"]] == ["a#2", "b#1"] and got["ScannedCount"] == 2
    assert got["LastEvaluatedKey"] == {"pk": "p", "sk": "b#1"}
    seen, start = [], None
    while True:
        page = tables.scan("tasks", limit=3, exclusive_start_key=start)
        seen += [(i["pk"], i["sk"]) for i in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert len(seen) == 8 and seen == sorted(seen, key=lambda k: (k[0], k[1].encode()))
    assert tables.scan("tasks", filter="pk = :q", values={":q": "q"})["Count"] == 1
    with pytest.raises(UnsupportedExpression):
        tables.query("tasks", "sk = :p", values={":p": "p"})


def test_execute_dynamodb_requests(tables):
    run = tables.execute
    run(
        "PutItem",
        {"TableName": "tasks", "Item": {"pk": {"S": "x"}, "sk": {"S": "y"}, "n": {"N": "1"}}},
    )
    out = run(
        "updateItem",
        {
            "TableName": "tasks",
            "Key": {"pk": {"S": "x"}, "sk": {"S": "y"}},
            "UpdateExpression": "ADD n :inc",
            "ConditionExpression": "n < :max",
            "ExpressionAttributeValues": {":inc": {"N": "2"}, ":max": {"N": "10"}},
            "ReturnValues": "UPDATED_NEW",
        },
    )
    assert out == {"Attributes": {"n": {"N": "3"}}}
    assert run("GetItem", {"TableName": "tasks", "Key": {"pk": {"S": "x"}, "sk": {"S": "y"}}})[
        "Item"
    ]["n"] == {"N": "3"}
    assert run("GetItem", {"TableName": "tasks", "Key": {"pk": {"S": "x"}, "sk": {"S": "z"}}}) == {}
    got = run(
        "Query",
        {
            "TableName": "tasks",
            "KeyConditionExpression": "#k = :x",
            "ExpressionAttributeNames": {"#k": "pk"},
            "ExpressionAttributeValues": {":x": {"S": "x"}},
        },
    )
    assert got["Count"] == 1 and got["Items"][0]["pk"] == {"S": "x"}
    with pytest.raises(UnsupportedExpression, match="IndexName"):
        run(
            "Query", {"TableName": "tasks", "IndexName": "gsi", "KeyConditionExpression": "pk = :x"}
        )


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_conditional_counters_are_exact(tables):
    threads, per_thread = 6, 15
    errors = []

    def worker():
        try:
            for _ in range(per_thread):
                tables.update_item(
                    "tasks",
                    {"pk": "counter", "sk": "c"},
                    expression="ADD #c :one",
                    condition="attribute_not_exists(#c) OR #c < :max",
                    names={"#c": "count"},
                    values={":one": 1, ":max": 10_000},
                )
        except Exception as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert errors == []
    assert tables.get_item("tasks", {"pk": "counter", "sk": "c"})["count"] == threads * per_thread


def test_concurrent_create_if_absent_has_one_winner(tables):
    winners, lost = [], []
    barrier = threading.Barrier(6)

    def worker(i):
        barrier.wait()
        try:
            tables.put_item(
                "tasks", {"pk": "lock", "sk": "x", "owner": i}, condition="attribute_not_exists(pk)"
            )
            winners.append(i)
        except ConditionalCheckFailed:
            lost.append(i)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert len(winners) == 1 and len(lost) == 5
    assert tables.get_item("tasks", {"pk": "lock", "sk": "x"})["owner"] == winners[0]
