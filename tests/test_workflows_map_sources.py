"""Map items from JSON objects and from bucket files (ItemsPointer, CSVDelimiter, Athena and S3
Inventory manifests, LOAD_AND_FLATTEN), `$$.Map.Item.Key` / `.Source`, ResultWriter's
WriterConfig, and the validation of those fields: each as AWS documents it."""

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace.storage import ObjectStore
from headrace.workflows import execute
from headrace.workflows.asl import validate


def _map(**fields):
    state = {
        "Type": "Map",
        "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
        "End": True,
        **fields,
    }
    return {"StartAt": "M", "States": {"M": state}}


def _reader(config, **parameters):
    return {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": config,
        "Parameters": {"Bucket": "inputs", **parameters},
    }


@pytest.fixture
def store(tmp_path):
    return ObjectStore(str(tmp_path / "buckets"))


def _run(tmp_path, definition, data=None, **kw):
    r = execute(definition, data or {}, storage=str(tmp_path / "buckets"), name="run1", **kw)
    assert r.status == "SUCCEEDED", (r.error, r.cause)
    return r.output


def test_jsonpath_map_over_an_object_gives_each_key_and_value(tmp_path):
    d = _map(
        ItemsPath="$.servers",
        ItemSelector={
            "name.$": "$$.Map.Item.Key",
            "port.$": "$$.Map.Item.Value.port",
            "index.$": "$$.Map.Item.Index",
            "source.$": "$$.Map.Item.Source",
        },
    )
    servers = {"web": {"port": 80}, "database": {"port": 5432}}
    assert _run(tmp_path, d, {"servers": servers}) == [
        {"name": "web", "port": 80, "index": 0, "source": "STATE_DATA"},
        {"name": "database", "port": 5432, "index": 1, "source": "STATE_DATA"},
    ]
    # without an ItemSelector an iteration's input is the pair's value
    assert _run(tmp_path, _map(ItemsPath="$.servers"), {"servers": servers}) == [
        {"port": 80},
        {"port": 5432},
    ]


def test_jsonata_map_items_may_be_an_object(tmp_path):
    d = _map(
        Items="{% $states.input.servers %}",
        ItemSelector={
            "name": "{% $states.context.Map.Item.Key %}",
            "port": "{% $states.context.Map.Item.Value.port %}",
        },
    )
    d["QueryLanguage"] = "JSONata"
    out = _run(tmp_path, d, {"servers": {"a": {"port": 1}, "b": {"port": 2}}})
    assert out == [{"name": "a", "port": 1}, {"name": "b", "port": 2}]
    # an object written in the definition, its values holding expressions
    d["States"]["M"]["Items"] = {"x": {"port": "{% 1 + 2 %}"}}
    assert validate(d) == []
    assert _run(tmp_path, d) == [{"name": "x", "port": 3}]
    # an array has no Key: the item context keeps only Index, Value and Source
    d["States"]["M"]["ItemSelector"] = "{% $states.context.Map.Item %}"
    d["States"]["M"]["Items"] = "{% [10] %}"
    assert _run(tmp_path, d) == [{"Index": 0, "Value": 10, "Source": "STATE_DATA"}]


def test_a_map_over_a_number_still_fails(tmp_path):
    r = execute(_map(ItemsPath="$.n"), {"n": 3}, storage=str(tmp_path / "b"))
    assert r.status == "FAILED" and r.error == "States.Runtime"
    assert "JSON array or object" in r.cause


def test_json_file_holding_an_object_and_items_pointer(tmp_path, store):
    bucket = store.bucket("inputs", create=True)
    bucket.put("teams.json", json.dumps({"red": [1, 2], "blue": [3]}).encode())
    nested = {"inventory": {"products": {"featured": [{"id": "p1"}, {"id": "p2"}]}}}
    bucket.put("nested.json", json.dumps(nested).encode())
    selector = {"k.$": "$$.Map.Item.Key", "v.$": "$$.Map.Item.Value", "s.$": "$$.Map.Item.Source"}
    d = _map(ItemReader=_reader({"InputType": "JSON"}, Key="teams.json"), ItemSelector=selector)
    assert _run(tmp_path, d) == [
        {"k": "red", "v": [1, 2], "s": "S3://inputs/teams.json"},
        {"k": "blue", "v": [3], "s": "S3://inputs/teams.json"},
    ]
    config = {"InputType": "JSON", "ItemsPointer": "/inventory/products/featured"}
    d = _map(ItemReader=_reader(config, Key="nested.json"))
    assert _run(tmp_path, d) == [{"id": "p1"}, {"id": "p2"}]
    config["ItemsPointer"] = "/inventory/missing"
    r = execute(d, {}, storage=str(tmp_path / "buckets"))
    assert r.status == "FAILED" and r.error == "States.ItemReaderFailed"
    # the cause names the bucket and key read
    assert r.cause == "ItemsPointer '/inventory/missing' selects nothing in s3://inputs/nested.json"
    bucket.put("bad.json", b"{not json")
    r = execute(
        _map(ItemReader=_reader({"InputType": "JSON"}, Key="bad.json")),
        {},
        storage=str(tmp_path / "buckets"),
    )
    assert r.status == "FAILED" and r.error == "States.ItemReaderFailed"
    assert r.cause.startswith("JSONDecodeError: ") and r.cause.endswith(" in s3://inputs/bad.json")
    r = execute(
        _map(ItemReader=_reader({"InputType": "JSON"}, Key="gone.json")),
        {},
        storage=str(tmp_path / "buckets"),
    )
    assert r.status == "FAILED" and r.cause.endswith(" in s3://inputs/gone.json"), r.cause


def test_item_selector_runs_per_item_before_the_batcher(tmp_path, store):
    # AWS order: ItemReader, ItemsPath, ItemSelector (per item), then ItemBatcher
    pairs = {f"k{i}": i for i in range(5)}
    store.bucket("inputs", create=True).put("pairs.json", json.dumps(pairs).encode())
    selector = {"k.$": "$$.Map.Item.Key", "v.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"}
    batcher = {"MaxItemsPerBatch": 1000, "BatchInput": {"tag.$": "$.tag"}}
    d = _map(
        ItemReader=_reader({"InputType": "JSON"}, Key="pairs.json"),
        ItemSelector=selector,
        ItemBatcher=batcher,
    )
    expected = [{"k": f"k{i}", "v": i, "i": i} for i in range(5)]
    assert _run(tmp_path, d, {"tag": "t"}) == [{"BatchInput": {"tag": "t"}, "Items": expected}]
    d = _map(
        Items="{% $states.input.pairs %}",
        ItemSelector={
            "k": "{% $states.context.Map.Item.Key %}",
            "v": "{% $states.context.Map.Item.Value %}",
        },
        ItemBatcher={"MaxItemsPerBatch": 2},
    )
    d["QueryLanguage"] = "JSONata"
    out = _run(tmp_path, d, {"pairs": {"a": 1, "b": 2, "c": 3}})
    assert out == [
        {"Items": [{"k": "a", "v": 1}, {"k": "b", "v": 2}]},
        {"Items": [{"k": "c", "v": 3}]},
    ]


def test_csv_delimiter_and_short_or_long_rows(tmp_path, store):
    store.bucket("inputs", create=True).put("r.psv", b'a|b|c\n1|2\n3|4|5|6\n"x|y"|z|w\n')
    config = {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW", "CSVDelimiter": "PIPE"}
    out = _run(tmp_path, _map(ItemReader=_reader(config, Key="r.psv")))
    # fewer fields than the header: empty strings; more: the extra ones are skipped
    assert out == [
        {"a": "1", "b": "2", "c": ""},
        {"a": "3", "b": "4", "c": "5"},
        {"a": "x|y", "b": "z", "c": "w"},
    ]


def test_csv_byte_order_mark_and_blank_lines(tmp_path, store):
    # a spreadsheet's UTF-8 export starts with a BOM; blank lines (inside and at the end) are
    # no records; a line of empty fields still is one
    text = "\ufeffid,name\r\n1,a\r\n\r\n2,b\r\n,\r\n\r\n"
    store.bucket("inputs", create=True).put("bom.csv", text.encode("utf-8"))
    config = {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}
    assert _run(tmp_path, _map(ItemReader=_reader(config, Key="bom.csv"))) == [
        {"id": "1", "name": "a"},
        {"id": "2", "name": "b"},
        {"id": "", "name": ""},
    ]


def test_csv_backslashes_and_doubled_quotes_as_aws_parses_them(tmp_path, store):
    text = 'path,size\nC:\\\\Program Files\\\\App.exe,65\na\\,b,2\n"q""x",3\nz\\k,4\n'
    store.bucket("inputs", create=True).put("p.csv", text.encode())
    out = _run(tmp_path, _map(ItemReader=_reader({"InputType": "CSV"}, Key="p.csv")))
    assert out == [
        {"path": "C:\\Program Files\\App.exe", "size": "65"},
        {"path": "a,b", "size": "2"},
        {"path": 'q"x', "size": "3"},
        {"path": "zk", "size": "4"},
    ]


def test_athena_data_manifest_reads_every_listed_file(tmp_path, store):
    data = store.bucket("athena", create=True)
    data.put("out/q1/part-0.csv.gz", gzip.compress(b"1,alice\n2,bob\n"))
    data.put("out/q1/part-1.csv", b"3,carol\n")
    manifest = "s3://athena/out/q1/part-0.csv.gz\ns3://athena/out/q1/part-1.csv\n"
    store.bucket("inputs", create=True).put("out/q1-manifest.csv", manifest.encode())
    config = {
        "ManifestType": "ATHENA_DATA",
        "InputType": "CSV",
        "CSVHeaderLocation": "GIVEN",
        "CSVHeaders": ["id", "name"],
    }
    d = _map(
        ItemReader=_reader(config, Key="out/q1-manifest.csv"),
        ItemSelector={"name.$": "$$.Map.Item.Value.name", "from.$": "$$.Map.Item.Source"},
    )
    assert _run(tmp_path, d) == [
        {"name": "alice", "from": "S3://athena/out/q1/part-0.csv.gz"},
        {"name": "bob", "from": "S3://athena/out/q1/part-0.csv.gz"},
        {"name": "carol", "from": "S3://athena/out/q1/part-1.csv"},
    ]
    # JSONL and Parquet data files, the other formats an UNLOAD writes
    data.put("out/q2/a.jsonl", b'{"id": 1}\n{"id": 2}\n')
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": [3, 4]}), sink)
    data.put("out/q3/a.parquet", sink.getvalue())
    for query, kind, name, ids in (
        ("q2", "JSONL", "a.jsonl", [1, 2]),
        ("q3", "PARQUET", "a.parquet", [3, 4]),
    ):
        store.bucket("inputs").put(f"{query}.csv", f"s3://athena/out/{query}/{name}\n".encode())
        config = {"ManifestType": "ATHENA_DATA", "InputType": kind}
        out = _run(tmp_path, _map(ItemReader=_reader(config, Key=f"{query}.csv")))
        assert [x["id"] for x in out] == ids


def test_s3_inventory_manifest_type(tmp_path, store):
    inventory = store.bucket("inv", create=True)
    inventory.put("d/a.csv.gz", gzip.compress(b'"src","k1","10"\n"src","k2"\n'))
    manifest = {
        "destinationBucket": "arn:aws:s3:::inv",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": "d/a.csv.gz"}],
    }
    store.bucket("inputs", create=True).put("manifest.json", json.dumps(manifest).encode())
    reader = _reader({"ManifestType": "S3_INVENTORY"}, Key="manifest.json")
    d = _map(
        ItemReader=reader, ItemSelector={"v.$": "$$.Map.Item.Value", "s.$": "$$.Map.Item.Source"}
    )
    assert _run(tmp_path, d) == [
        {"v": {"Bucket": "src", "Key": "k1", "Size": "10"}, "s": "S3://inv/d/a.csv.gz"},
        {"v": {"Bucket": "src", "Key": "k2", "Size": ""}, "s": "S3://inv/d/a.csv.gz"},
    ]


def test_list_objects_load_and_flatten_reads_each_object(tmp_path, store):
    bucket = store.bucket("inputs", create=True)
    bucket.put("logs/01.jsonl", b'{"n": 1}\n{"n": 2}\n')
    bucket.put("logs/02.jsonl", b'{"n": 3}\n')
    reader = {
        "Resource": "arn:aws:states:::s3:listObjectsV2",
        "ReaderConfig": {"InputType": "JSONL", "Transformation": "LOAD_AND_FLATTEN"},
        "Parameters": {"Bucket": "inputs", "Prefix": "logs/"},
    }
    d = _map(
        ItemReader=reader, ItemSelector={"n.$": "$$.Map.Item.Value.n", "s.$": "$$.Map.Item.Source"}
    )
    assert _run(tmp_path, d) == [
        {"n": 1, "s": "S3://inputs/logs/01.jsonl"},
        {"n": 2, "s": "S3://inputs/logs/01.jsonl"},
        {"n": 3, "s": "S3://inputs/logs/02.jsonl"},
    ]
    # without it, the items are the objects' metadata and the source is the bucket
    reader["ReaderConfig"] = {}
    d["States"]["M"]["ItemSelector"] = {"k.$": "$$.Map.Item.Value.Key", "s.$": "$$.Map.Item.Source"}
    assert _run(tmp_path, d) == [
        {"k": "logs/01.jsonl", "s": "S3://inputs"},
        {"k": "logs/02.jsonl", "s": "S3://inputs"},
    ]


# ------------------------------------------------------------------------------ ResultWriter

_ARRAYS = {
    "StartAt": "Out",
    "States": {
        "Out": {
            "Type": "Pass",
            "Parameters": {"v.$": "States.ArrayRange(0, $.n, 1)"},
            "OutputPath": "$.v",
            "End": True,
        }
    },
}


def _writer_map(writer, **fields):
    return _map(
        ItemsPath="$.ns",
        ItemSelector={"n.$": "$$.Map.Item.Value"},
        ItemProcessor=_ARRAYS,
        ResultWriter=writer,
        **fields,
    )


@pytest.mark.parametrize(
    ("transformation", "expected"),
    [("COMPACT", [[0], [0, 1]]), ("FLATTEN", [0, 0, 1])],
)
def test_writer_config_alone_transforms_the_state_result(tmp_path, transformation, expected):
    writer = {"WriterConfig": {"Transformation": transformation, "OutputType": "JSON"}}
    assert _run(tmp_path, _writer_map(writer), {"ns": [0, 1]}) == expected


def test_writer_config_none_gives_each_iteration_with_its_metadata(tmp_path):
    writer = {"WriterConfig": {"Transformation": "NONE"}}
    out = _run(tmp_path, _writer_map(writer), {"ns": [1]})
    (entry,) = out
    assert entry["Status"] == "SUCCEEDED" and json.loads(entry["Output"]) == [0, 1]
    assert json.loads(entry["Input"]) == {"n": 1}
    assert entry["InputDetails"] == entry["OutputDetails"] == {"Included": True}
    assert entry["StartDate"].endswith("Z") and entry["StopDate"] >= entry["StartDate"]


def test_result_files_as_aws_writes_them(tmp_path, store):
    writer = {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {"Bucket": "out", "Prefix": "runs"},
        "WriterConfig": {"Transformation": "FLATTEN", "OutputType": "JSONL"},
    }
    d = _writer_map(writer, ToleratedFailureCount=1)
    # n = -1 makes States.ArrayRange fail: a tolerated failure, written to FAILED_0
    out = _run(tmp_path, d, {"ns": [1, 2, "x"]})
    assert out["ResultWriterDetails"] == {"Bucket": "out", "Key": "runs/run1/manifest.json"}
    bucket = store.bucket("out")
    manifest = json.loads(bucket.get("runs/run1/manifest.json"))
    succeeded = bucket.get("runs/run1/SUCCEEDED_0.jsonl")
    failed = bucket.get("runs/run1/FAILED_0.jsonl")
    assert manifest["ResultFiles"] == {
        "FAILED": [{"Key": "runs/run1/FAILED_0.jsonl", "Size": len(failed)}],
        "PENDING": [],
        "SUCCEEDED": [{"Key": "runs/run1/SUCCEEDED_0.jsonl", "Size": len(succeeded)}],
    }
    # FLATTEN: the children's arrays flattened, one JSON value a line
    assert [json.loads(line) for line in succeeded.decode().splitlines()] == [0, 1, 0, 1, 2]
    # a failed child's entry is never transformed
    (entry,) = [json.loads(line) for line in failed.decode().splitlines()]
    assert entry["Status"] == "FAILED" and entry["Error"] == "States.IntrinsicFailure"
    assert json.loads(entry["Input"]) == {"n": "x"} and "Output" not in entry
    # with a Resource and no WriterConfig: NONE, one JSON array per file
    del writer["WriterConfig"]
    _run(tmp_path, d, {"ns": [1, "x"]})
    entries = json.loads(bucket.get("runs/run1/SUCCEEDED_0.json"))
    assert [json.loads(e["Output"]) for e in entries] == [[0, 1]]
    assert set(entries[0]) == {
        "Input",
        "InputDetails",
        "Output",
        "OutputDetails",
        "StartDate",
        "Status",
        "StopDate",
    }


# -------------------------------------------------------------------------------- validation


def _problems(definition):
    return {(p.path, p.message) for p in validate(definition)}


def test_validation_of_reader_and_writer_config():
    proc = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}

    def paths(**fields):
        return {p for p, _ in _problems(_map(ItemProcessor=proc, **fields))}

    ok = _reader(
        {"InputType": "CSV", "CSVDelimiter": "TAB", "CSVHeaderLocation": "FIRST_ROW"}, Key="k"
    )
    assert paths(ItemReader=ok) == set()
    bad = _reader({"InputType": "XML", "CSVDelimiter": ",", "Bogus": 1}, Key="k")
    assert paths(ItemReader=bad) == {
        "$.States.M.ItemReader.ReaderConfig.InputType",
        "$.States.M.ItemReader.ReaderConfig.CSVDelimiter",
        "$.States.M.ItemReader.ReaderConfig.Bogus",
    }
    both = _reader({"ManifestType": "S3_INVENTORY", "InputType": "CSV"}, Key="k")
    assert paths(ItemReader=both) == {"$.States.M.ItemReader.ReaderConfig.InputType"}
    pointer = _reader({"InputType": "JSON", "ItemsPointer": "inventory"}, Key="k")
    assert paths(ItemReader=pointer) == {"$.States.M.ItemReader.ReaderConfig.ItemsPointer"}
    flatten = {
        "Resource": "arn:aws:states:::s3:listObjectsV2",
        "ReaderConfig": {"Transformation": "LOAD_AND_FLATTEN"},
        "Parameters": {"Bucket": "b"},
    }
    assert paths(ItemReader=flatten) == {"$.States.M.ItemReader.ReaderConfig"}
    config = {"Transformation": "ZIP", "OutputType": "CSV"}
    assert paths(ResultWriter={"WriterConfig": config}) == {
        "$.States.M.ResultWriter.WriterConfig.Transformation",
        "$.States.M.ResultWriter.WriterConfig.OutputType",
    }
    assert paths(ResultWriter={"WriterConfig": {"OutputType": "JSONL"}}) == set()
    assert paths(ResultWriter={}) == {"$.States.M.ResultWriter"}
    no_params = {"Resource": "arn:aws:states:::s3:putObject"}
    assert paths(ResultWriter=no_params) == {"$.States.M.ResultWriter"}
