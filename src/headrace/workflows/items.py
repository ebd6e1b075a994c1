"""Map states that read their items from a bucket and write their results to one
(`ItemReader`, `ResultWriter`), on headrace's object store, with AWS's fields and shapes.

* `ItemReader` with `arn:aws:states:::s3:getObject` (`Bucket`, `Key`; `ReaderConfig.InputType`
  JSON — an array, or an object whose key-value pairs are the items, `ItemsPointer` selecting a
  nested one —, JSONL, CSV with `CSVHeaderLocation`/`CSVHeaders`/`CSVDelimiter`, or PARQUET;
  `ManifestType` S3_INVENTORY (or `InputType` MANIFEST) or ATHENA_DATA; `MaxItems`), or
  `arn:aws:states:::s3:listObjectsV2` (`Bucket`, `Prefix`): each object as
  `{"Key", "Size", "Etag", "LastModified", "StorageClass"}`, or with `Transformation`
  LOAD_AND_FLATTEN the items inside each object. Each item keeps its source, the URI AWS gives as
  `$$.Map.Item.Source`.
* `ResultWriter` with `arn:aws:states:::s3:putObject` (`Bucket`, `Prefix`): the children's
  entries go to `<Prefix>/<Map Run id>/SUCCEEDED_0.json` and `FAILED_0.json` (`.jsonl` for
  `WriterConfig.OutputType` JSONL, `Transformation` NONE, COMPACT or FLATTEN) with a
  `manifest.json`, and the Map's result is `{"MapRunArn", "ResultWriterDetails": {"Bucket",
  "Key"}}`, as on AWS.

What was read is recorded in the history (`MapStateStarted`), so a resumed execution does not
read the object again.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from headrace.workflows.errors import ITEM_READER_FAILURE, RESULT_WRITER_FAILED, StatesError

GET_OBJECT = "arn:aws:states:::s3:getObject"
LIST_OBJECTS = "arn:aws:states:::s3:listObjectsV2"
PUT_OBJECT = "arn:aws:states:::s3:putObject"


# ReaderConfig.CSVDelimiter as AWS names the delimiters
CSV_DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}
INPUT_TYPES = ("CSV", "JSON", "JSONL", "PARQUET", "MANIFEST")
MANIFEST_TYPES = ("ATHENA_DATA", "S3_INVENTORY")
READER_TRANSFORMATIONS = ("NONE", "LOAD_AND_FLATTEN")
WRITER_TRANSFORMATIONS = ("NONE", "COMPACT", "FLATTEN")
OUTPUT_TYPES = ("JSON", "JSONL")
STATE_DATA = "STATE_DATA"  # $$.Map.Item.Source of items from the state's input


@dataclass
class ReadItems:
    """What an ItemReader read: the items (a JSON object's values, with its `keys`), and where
    each came from (`$$.Map.Item.Source`: one URI for all of them, or one per item)."""

    items: list[Any]
    source: str | list[str]
    keys: list[str] | None = None


def iteration_items(value: Any) -> tuple[list[Any], list[str] | None] | None:
    """The items a Map iterates over `value`: an array's elements, or a JSON object's values
    with its keys (`$$.Map.Item.Key`); None for anything else."""
    if isinstance(value, list):
        return value, None
    if isinstance(value, dict):
        return list(value.values()), list(value)
    return None


def json_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901 (`/inventory/products/0`, `~1` for "/" and `~0` for "~" in a key): a dozen
    lines, not worth a dependency."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise ValueError(f"ItemsPointer {pointer!r} must start with '/'")
    node = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            raise ValueError(f"ItemsPointer {pointer!r} selects nothing")
    return node


def s3_uri(bucket: str, key: str | None = None) -> str:
    """`$$.Map.Item.Source` of an object (or a bucket) as AWS writes it: `S3://bucket/key`."""
    return f"S3://{bucket}/{key}" if key is not None else f"S3://{bucket}"


class _ObjectError(Exception):
    """An object an ItemReader read is missing or unreadable: the message names it."""


class StorageMapIO:
    def __init__(self, storage_url: str | None) -> None:
        self.storage_url = storage_url
        self._store: Any = None

    def _bucket(self, name: str) -> Any:
        if not self.storage_url:
            raise StatesError(
                "States.ItemReaderFailed",
                "no object store is configured for ItemReader/ResultWriter "
                "(fix: run under `headrace up`, or pass storage= to execute())",
            )
        if self._store is None:
            from headrace.storage import ObjectStore

            self._store = ObjectStore(self.storage_url)
        return self._store.bucket(name, create=True)

    def read_items(self, reader: dict[str, Any], parameters: dict[str, Any]) -> ReadItems:
        resource = reader.get("Resource")
        config = reader.get("ReaderConfig") or {}
        needed = ("Bucket", "Key") if resource == GET_OBJECT else ("Bucket",)
        _require(parameters, needed, "ItemReader")
        try:
            read = self._read(resource, parameters, config)
        except StatesError:
            raise
        except _ObjectError as exc:
            raise StatesError("States.ItemReaderFailed", str(exc)) from None
        except Exception as exc:  # a missing object, bad JSON/CSV: the Map fails, clearly
            raise StatesError("States.ItemReaderFailed", f"{type(exc).__name__}: {exc}") from None
        limit = int(config.get("MaxItems") or 0)
        if limit:
            read.items = read.items[:limit]
            read.keys = read.keys[:limit] if read.keys is not None else None
            if isinstance(read.source, list):
                read.source = read.source[:limit]
        return read

    def _read(self, resource: Any, parameters: dict[str, Any], config: dict[str, Any]) -> ReadItems:
        bucket_name = parameters["Bucket"]
        kind = str(config.get("InputType", "")).upper()
        manifest = str(config.get("ManifestType", "")).upper()
        if resource == LIST_OBJECTS:
            listed = list(self._bucket(bucket_name).list(parameters.get("Prefix", "")))
            if str(config.get("Transformation", "NONE")).upper() == "LOAD_AND_FLATTEN":
                # each listed object's content, read as InputType, as AWS does
                return self._files(bucket_name, [o.key for o in listed], config)
            items = [
                {
                    "Key": o.key,
                    "Size": o.size,
                    "Etag": f'"{o.etag}"',
                    "LastModified": datetime.fromtimestamp(o.last_modified, UTC).isoformat(),
                    "StorageClass": "STANDARD",
                }
                for o in listed
            ]
            return ReadItems(items, s3_uri(bucket_name))
        if resource != GET_OBJECT:
            raise StatesError(
                "States.ItemReaderFailed", f"ItemReader resource {resource!r} is not supported"
            )
        key = parameters["Key"]
        if manifest == "S3_INVENTORY" or kind == "MANIFEST":
            return self._inventory(parameters, config)
        if manifest == "ATHENA_DATA":
            return self._athena(bucket_name, key, config)
        return self._files(bucket_name, [key], config, whole_object=True)

    def _files(
        self,
        bucket_name: str,
        keys: list[str],
        config: dict[str, Any],
        *,
        whole_object: bool = False,
    ) -> ReadItems:
        """The items of objects read as InputType, each item's source the object's URI. A
        single JSON file (`whole_object`) may hold an object: its key-value pairs are the items."""
        bucket = self._bucket(bucket_name)
        items: list[Any] = []
        sources: list[str] = []
        found_keys: list[str] | None = None
        for key in keys:
            try:
                parsed = _parse(_decompress(key, bucket.get(key)), config, key)
            except Exception as exc:  # the cause names the object, as the bucket may be another
                what = str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"
                raise _ObjectError(f"{what} in s3://{bucket_name}/{key}") from None
            if isinstance(parsed, dict):
                if not whole_object:
                    raise ValueError(f"{key!r} holds a JSON object, not an array of items")
                found_keys, parsed = list(parsed), list(parsed.values())
            items.extend(parsed)
            sources.extend([s3_uri(bucket_name, key)] * len(parsed))
        if whole_object:
            return ReadItems(items, s3_uri(bucket_name, keys[0]), found_keys)
        return ReadItems(items, sources)

    def _athena(self, bucket_name: str, key: str, config: dict[str, Any]) -> ReadItems:
        """An Athena UNLOAD data manifest: a CSV list of the data files' S3 URIs, each read as
        InputType (CSV, JSONL or PARQUET; an UNLOAD's CSV files have no header row)."""
        listing = _decompress(key, self._bucket(bucket_name).get(key)).decode("utf-8")
        items: list[Any] = []
        sources: list[str] = []
        for row in csv.reader(io.StringIO(listing)):
            if not row or not row[0].strip():
                continue
            uri = row[0].strip()
            if not uri.lower().startswith("s3://") or "/" not in uri[5:]:
                raise ValueError(f"the Athena manifest {key!r} lists {uri!r}, not an s3:// URI")
            data_bucket, data_key = uri[5:].split("/", 1)
            read = self._files(data_bucket, [data_key], config)
            items.extend(read.items)
            sources.extend(read.source)
        return ReadItems(items, sources)

    def _inventory(self, parameters: dict[str, Any], config: dict[str, Any]) -> ReadItems:
        """An S3 Inventory report: its `manifest.json` names CSV files (gzipped or not) whose
        rows are the items, as objects keyed by the manifest's `fileSchema`."""
        manifest = json.loads(self._bucket(parameters["Bucket"]).get(parameters["Key"]))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
            raise ValueError(
                f'{parameters["Key"]!r} is not an S3 Inventory manifest (no "files" list)'
            )
        kind = str(manifest.get("fileFormat", "CSV")).upper()
        if kind != "CSV":
            raise ValueError(f"the inventory's fileFormat is {kind}; only CSV can be read")
        schema = [c.strip() for c in str(manifest.get("fileSchema", "Bucket, Key")).split(",")]
        # the files are in the inventory's destination bucket (an ARN in the manifest)
        source = str(manifest.get("destinationBucket") or parameters["Bucket"])
        source_bucket = source.rsplit(":", 1)[-1]
        bucket = self._bucket(source_bucket)
        limit = int(config.get("MaxItems") or 0)
        items: list[Any] = []
        sources: list[str] = []
        for entry in manifest["files"]:
            data = _decompress(entry["key"], bucket.get(entry["key"]))
            for row in csv.reader(io.StringIO(data.decode("utf-8"))):
                items.append(_row(schema, row))
                sources.append(s3_uri(source_bucket, entry["key"]))
                if limit and len(items) >= limit:
                    return ReadItems(items, sources)
        return ReadItems(items, sources)

    def write_results(
        self,
        writer: dict[str, Any],
        parameters: dict[str, Any],
        execution: dict[str, Any],
        succeeded: list[Any],
        failed: list[Any],
        *,
        map_run: str | None = None,
    ) -> dict[str, Any]:
        _require(parameters, ("Bucket",), "ResultWriter")
        config = writer.get("WriterConfig") or {}
        try:
            return self._write_results(parameters, config, execution, succeeded, failed, map_run)
        except StatesError:
            raise
        except Exception as exc:  # a bad bucket or key, a full disk: the Map fails, clearly
            raise StatesError(RESULT_WRITER_FAILED, f"{type(exc).__name__}: {exc}") from None

    def _write_results(
        self,
        parameters: dict[str, Any],
        config: dict[str, Any],
        execution: dict[str, Any],
        succeeded: list[Any],
        failed: list[Any],
        map_run: str | None,
    ) -> dict[str, Any]:
        bucket_name = parameters["Bucket"]
        prefix = str(parameters.get("Prefix", "")).strip("/")
        # as on AWS, under the Map Run's id (a Map run as scopes: the execution's name)
        run = map_run.rsplit(":", 1)[-1] if map_run else execution.get("Name", "run")
        base = f"{prefix}/{run}" if prefix else run
        bucket = self._bucket(bucket_name)
        # with a Resource and no WriterConfig, AWS writes the entries untransformed (NONE)
        transformation = str(config.get("Transformation", "NONE")).upper()
        jsonl = str(config.get("OutputType", "JSON")).upper() == "JSONL"
        files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        for kind, results in (
            ("SUCCEEDED", transform(succeeded, transformation)),
            ("FAILED", failed),
        ):
            if not results:
                continue
            if jsonl:
                body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in results)
            else:
                body = json.dumps(results)
            key = f"{base}/{kind}_0.{'jsonl' if jsonl else 'json'}"
            data = body.encode()
            bucket.put(key, data)
            files[kind].append({"Key": key, "Size": len(data)})
        manifest = {
            "DestinationBucket": bucket_name,
            "MapRunArn": map_run or f"{execution.get('Id', '')}:map-run",
            "ResultFiles": files,
        }
        key = f"{base}/manifest.json"
        bucket.put(key, json.dumps(manifest).encode())
        return {
            "MapRunArn": manifest["MapRunArn"],
            "ResultWriterDetails": {"Bucket": bucket_name, "Key": key},
        }


def transform(entries: list[dict[str, Any]], transformation: str) -> list[Any]:
    """WriterConfig.Transformation of the succeeded children's entries: NONE keeps each entry
    (metadata, Input and Output as JSON text), COMPACT keeps each child's output, FLATTEN
    also flattens the outputs that are arrays into one array."""
    if transformation == "NONE":
        return entries
    outputs = [json.loads(e["Output"]) for e in entries]
    if transformation == "FLATTEN":
        return [x for out in outputs for x in (out if isinstance(out, list) else [out])]
    return outputs


def _row(headers: list[str], row: list[str]) -> dict[str, str]:
    """A CSV row as AWS reads it: missing fields as empty strings, extra fields dropped."""
    return {h: row[i] if i < len(row) else "" for i, h in enumerate(headers)}


def _decompress(key: str, data: bytes) -> bytes:
    """Input files compressed with GZIP or ZSTD, told by their names, as AWS reads them."""
    lower = key.lower()
    if lower.endswith((".gz", ".gzip")):
        return gzip.decompress(data)
    if lower.endswith((".zst", ".zstd")):
        import pyarrow as pa  # pyarrow (a headrace dependency) carries a zstd codec

        return pa.input_stream(pa.py_buffer(data), compression="zstd").read()
    return data


def _require(parameters: Any, fields: tuple[str, ...], which: str) -> None:
    """ItemReader/ResultWriter Parameters name where to read or write: say so when they don't."""
    error = RESULT_WRITER_FAILED if which == "ResultWriter" else ITEM_READER_FAILURE
    if not isinstance(parameters, dict):
        raise StatesError(error, f"{which} Parameters must be an object, not {parameters!r}")
    for name in fields:
        value = parameters.get(name)
        if not isinstance(value, str) or not value:
            got = "is missing" if name not in parameters else f"is {value!r}"
            raise StatesError(
                error,
                f"{which} Parameters.{name} {got} (fix: give the {name.lower()} to "
                f'{"write to" if which == "ResultWriter" else "read from"} as "{name}": "..." '
                f'or "{name}.$": "<path>")',
            )


def _parse(data: bytes, config: dict[str, Any], key: str) -> Any:
    """One object's items: a list, or for a JSON file that holds an object, that object."""
    kind = str(config.get("InputType", "JSON")).upper()
    if kind == "PARQUET":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    raw = data.decode("utf-8")
    if kind == "JSON":
        parsed = json.loads(raw)
        if "ItemsPointer" in config:
            parsed = json_pointer(parsed, str(config["ItemsPointer"]))
        if not isinstance(parsed, list | dict):
            raise ValueError(f"{key!r} holds neither a JSON array nor an object")
        return parsed
    if kind == "JSONL":
        return [json.loads(line) for line in raw.splitlines() if line.strip()]
    if kind == "CSV":
        name = str(config.get("CSVDelimiter", "COMMA")).upper()
        if name not in CSV_DELIMITERS:
            raise ValueError(f"CSVDelimiter {name!r} is not one of {', '.join(CSV_DELIMITERS)}")
        # AWS's rules: quotes doubled inside quotes, and a backslash escapes the next character
        # (a backslash, a quote or the delimiter; before any other it is dropped)
        # AWS documents neither a byte order mark nor blank lines: a BOM is not part of the
        # first header, and a blank line is no record (not an item of empty strings)
        text = raw.removeprefix("\ufeff")
        reader = csv.reader(io.StringIO(text), delimiter=CSV_DELIMITERS[name], escapechar="\\")
        rows = [row for row in reader if row]
        if config.get("CSVHeaderLocation", "FIRST_ROW") == "GIVEN":
            headers = list(config["CSVHeaders"])
        else:
            headers, rows = rows[0], rows[1:]
        return [_row(headers, row) for row in rows]
    raise ValueError(
        f"ReaderConfig InputType {kind!r} is not supported (JSON, JSONL, CSV, PARQUET)"
    )


def batches(items: list[Any], batcher: dict[str, Any], batch_input: Any) -> list[dict[str, Any]]:
    """ItemBatcher: groups of at most MaxItemsPerBatch items (and MaxInputBytesPerBatch bytes),
    each as `{"Items": [...], "BatchInput": ...}`."""
    most = int(batcher.get("MaxItemsPerBatch") or len(items) or 1)
    max_bytes = batcher.get("MaxInputBytesPerBatch")
    out: list[dict[str, Any]] = []
    current: list[Any] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item))
        if current and (len(current) >= most or (max_bytes and size + item_size > max_bytes)):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        out.append(current)
    shaped = []
    for chunk in out:
        entry: dict[str, Any] = {"Items": chunk}
        if batch_input is not None:
            entry["BatchInput"] = batch_input
        shaped.append(entry)
    return shaped
