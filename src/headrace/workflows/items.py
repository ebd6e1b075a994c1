"""Map states that read their items from a bucket and write their results to one
(`ItemReader`, `ResultWriter`), on headrace's object store.

* `ItemReader` with `arn:aws:states:::s3:getObject` (`Bucket`, `Key`; `ReaderConfig.InputType`
  JSON — an array —, JSONL or CSV with `CSVHeaderLocation` FIRST_ROW or GIVEN + `CSVHeaders`,
  or MANIFEST — an S3 Inventory `manifest.json` whose CSV files hold the items —, and
  `MaxItems`), or `arn:aws:states:::s3:listObjectsV2` (`Bucket`, `Prefix`): each object as
  `{"Key", "Size", "Etag", "LastModified", "StorageClass"}`.
* `ResultWriter` with `arn:aws:states:::s3:putObject` (`Bucket`, `Prefix`): the iterations'
  results go to `<Prefix>/<Map Run id>/SUCCEEDED_0.json` (and `FAILED_0.json` for tolerated
  failures) with a `manifest.json`, and the Map's result is `{"MapRunArn", "ResultWriterDetails":
  {"Bucket", "Key"}}`, as on AWS.

What was read is recorded in the history (`MapStateStarted`), so a resumed execution does not
read the object again.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime
from typing import Any

from headrace.workflows.errors import ITEM_READER_FAILURE, RESULT_WRITER_FAILED, StatesError

GET_OBJECT = "arn:aws:states:::s3:getObject"
LIST_OBJECTS = "arn:aws:states:::s3:listObjectsV2"
PUT_OBJECT = "arn:aws:states:::s3:putObject"


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

    def read_items(self, reader: dict[str, Any], parameters: dict[str, Any]) -> list[Any]:
        resource = reader.get("Resource")
        config = reader.get("ReaderConfig") or {}
        needed = ("Bucket", "Key") if resource == GET_OBJECT else ("Bucket",)
        _require(parameters, needed, "ItemReader")
        try:
            if resource == LIST_OBJECTS:
                items = [
                    {
                        "Key": o.key,
                        "Size": o.size,
                        "Etag": f'"{o.etag}"',
                        "LastModified": datetime.fromtimestamp(o.last_modified, UTC).isoformat(),
                        "StorageClass": "STANDARD",
                    }
                    for o in self._bucket(parameters["Bucket"]).list(parameters.get("Prefix", ""))
                ]
            elif resource == GET_OBJECT and str(config.get("InputType", "")).upper() == "MANIFEST":
                items = self._inventory(parameters, config)
            elif resource == GET_OBJECT:
                raw = self._bucket(parameters["Bucket"]).get(parameters["Key"]).decode("utf-8")
                items = _parse(raw, config)
            else:
                raise StatesError(
                    "States.ItemReaderFailed", f"ItemReader resource {resource!r} is not supported"
                )
        except StatesError:
            raise
        except Exception as exc:  # a missing object, bad JSON/CSV: the Map fails, clearly
            raise StatesError("States.ItemReaderFailed", f"{type(exc).__name__}: {exc}") from None
        limit = config.get("MaxItems")
        return items[: int(limit)] if limit else items

    def _inventory(self, parameters: dict[str, Any], config: dict[str, Any]) -> list[Any]:
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
        bucket = self._bucket(source.rsplit(":", 1)[-1])
        limit = int(config.get("MaxItems") or 0)
        items: list[Any] = []
        for entry in manifest["files"]:
            data = bucket.get(entry["key"])
            if entry["key"].endswith(".gz"):
                data = gzip.decompress(data)
            for row in csv.reader(io.StringIO(data.decode("utf-8"))):
                items.append(dict(zip(schema, row, strict=False)))
                if limit and len(items) >= limit:
                    return items
        return items

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
        try:
            return self._write_results(parameters, execution, succeeded, failed, map_run)
        except StatesError:
            raise
        except Exception as exc:  # a bad bucket or key, a full disk: the Map fails, clearly
            raise StatesError(RESULT_WRITER_FAILED, f"{type(exc).__name__}: {exc}") from None

    def _write_results(
        self,
        parameters: dict[str, Any],
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
        files = []
        for kind, results in (("SUCCEEDED", succeeded), ("FAILED", failed)):
            if not results and kind == "FAILED":
                continue
            key = f"{base}/{kind}_0.json"
            bucket.put(key, json.dumps(results).encode())
            files.append({"Key": key, "Size": len(results)})
        manifest = {
            "DestinationBucket": bucket_name,
            "MapRunArn": map_run or f"{execution.get('Id', '')}:map-run",
            "ResultFiles": {k["Key"].rsplit("/", 1)[1].split("_")[0]: [k] for k in files},
        }
        key = f"{base}/manifest.json"
        bucket.put(key, json.dumps(manifest).encode())
        return {
            "MapRunArn": manifest["MapRunArn"],
            "ResultWriterDetails": {"Bucket": bucket_name, "Key": key},
        }


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


def _parse(raw: str, config: dict[str, Any]) -> list[Any]:
    kind = config.get("InputType", "JSON").upper()
    if kind == "JSON":
        data = json.loads(raw)
        if not isinstance(data, list):
            raise ValueError("the JSON object is not an array")
        return data
    if kind == "JSONL":
        return [json.loads(line) for line in raw.splitlines() if line.strip()]
    if kind == "CSV":
        rows = list(csv.reader(io.StringIO(raw), delimiter=config.get("CSVDelimiter", ",")))
        if config.get("CSVHeaderLocation", "FIRST_ROW") == "GIVEN":
            headers = list(config["CSVHeaders"])
        else:
            headers, rows = rows[0], rows[1:]
        return [dict(zip(headers, row, strict=False)) for row in rows]
    raise ValueError(f"ReaderConfig InputType {kind!r} is not supported (JSON, JSONL or CSV)")


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
