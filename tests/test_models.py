"""The model registry on SQLite and PostgreSQL ledgers: versions, aliases, loads checked by
SHA-256, concurrent pushes, and the errors users see."""

import hashlib
import json
import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest
from sqlalchemy import update

from headrace.models import (
    ChecksumMismatch,
    InvalidModel,
    LibraryMismatch,
    ModelInUse,
    ModelNotFound,
    ModelRegistry,
    parse_ref,
)
from headrace.models.schema import model_versions
from headrace.storage import ObjectStore

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits():
    """A real scikit-learn model on its bundled digits data: (model, X frame, y)."""
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    data = load_digits(as_frame=True)
    X, y = data.data, data.target
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(X[:1500], y[:1500])
    return model, X, y


@pytest.fixture
def registry(ledger, tmp_path):
    reg = ModelRegistry(ledger, ObjectStore(tmp_path / "store"), cache_dir=tmp_path / "cache")
    yield reg


def _stored_bytes(registry, version) -> bytes:
    return registry.bucket.get(version.artifact)


def test_push_and_load_a_digits_classifier(registry, digits):
    clf, X, y = digits
    accuracy = clf.score(X[1500:], y[1500:])
    v = registry.push("digits", clf, alias="production", metrics={"accuracy": accuracy})
    assert (v.name, v.version, v.aliases, v.format) == ("digits", 1, ("production",), "joblib")
    assert v.framework == "sklearn"
    import sklearn

    assert v.libraries["scikit-learn"] == sklearn.__version__ and "python" in v.libraries
    assert v.features == list(X.columns) and len(v.features) == 64
    assert v.metrics == {"accuracy": pytest.approx(accuracy)} and accuracy > 0.85
    stored = _stored_bytes(registry, v)
    assert (v.size, v.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert v.uri.endswith(v.artifact) and v.uri.startswith("file://")

    for loaded in (
        registry.load("digits", alias="production"),
        registry.load("digits", 1),
        registry.load("digits"),
    ):
        assert type(loaded) is type(clf)
        assert (loaded.predict(X[1500:]) == clf.predict(X[1500:])).all()
    assert registry.resolve("digits@production") == registry.get("digits", 1)


def test_versions_count_up_and_are_never_given_twice(registry):
    assert [registry.push("m", {"n": n}).version for n in (1, 2, 3)] == [1, 2, 3]
    gone = registry.delete_version("m", 3)
    assert not registry.bucket.exists(gone.artifact)
    assert registry.push("m", {"n": 4}).version == 4
    assert [v.version for v in registry.versions("m")] == [1, 2, 4]
    assert registry.load("m") == {"n": 4} and registry.load("m", 2) == {"n": 2}
    with pytest.raises(ModelNotFound, match=r"version 3 of model 'm'.*versions: 1, 2, 4"):
        registry.load("m", 3)
    (summary,) = registry.models()
    assert (summary.name, summary.versions, summary.latest) == ("m", 3, 4)


def test_aliases_move_with_a_history_and_roll_back(registry):
    for n in range(3):
        registry.push("m", {"n": n})
    assert registry.set_alias("m", "production", 1).previous is None
    assert registry.set_alias("m", "production", 1) is None  # already there: no move
    registry.set_alias("m", "production", 2)
    registry.set_alias("m", "staging", 3)
    assert registry.load("m", alias="production") == {"n": 1}
    back = registry.rollback("m", "production")
    assert (back.previous, back.version) == (2, 1)
    assert registry.load("m", alias="production") == {"n": 0}
    assert registry.rollback("m", "production").version == 2  # undo the undo
    history = [(m.alias, m.previous, m.version) for m in registry.alias_history("m")]
    assert history == [
        ("production", None, 1),
        ("production", 1, 2),
        ("staging", None, 3),
        ("production", 2, 1),
        ("production", 1, 2),
    ]
    removed = registry.remove_alias("m", "staging")
    assert (removed.previous, removed.version) == (3, None)
    with pytest.raises(ModelNotFound, match=r"alias 'staging' of model 'm': is not set"):
        registry.load("m", alias="staging")
    assert registry.rollback("m", "staging").version == 3  # undoes the removal
    with pytest.raises(ModelNotFound, match="alias 'canary' of model 'm': has never been set"):
        registry.rollback("m", "canary")
    registry.push("other", {}, alias="production")
    with pytest.raises(ModelNotFound, match="has no earlier version to go back to"):
        registry.rollback("other", "production")
    assert registry.get("m", 2).aliases == ("production",)
    assert registry.models()[0].aliases == {"production": 2, "staging": 3}


def test_a_version_an_alias_points_at_cannot_be_deleted(registry):
    registry.push("m", {"n": 1}, alias="production")
    v2 = registry.push("m", {"n": 2}, alias="staging")
    with pytest.raises(ModelInUse, match=r"version 1 of model 'm'.*'production'.*fix: move"):
        registry.delete_version("m", 1)
    assert registry.load("m", 1) == {"n": 1}
    registry.set_alias("m", "production", 2)
    registry.delete_version("m", 1)
    with pytest.raises(ModelInUse, match="'production', 'staging'"):
        registry.delete_version("m", v2.version)
    # the alias that pointed at the deleted version cannot roll back to it
    with pytest.raises(ModelNotFound, match="version 1 of model 'm': was deleted"):
        registry.rollback("m", "production")


def test_concurrent_pushes_from_processes_get_distinct_versions(ledger, tmp_path):
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.models_push_child",
                ledger.url,
                str(tmp_path / "store"),
                str(tmp_path / f"cache{writer}"),
                str(writer),
                "5",
                str(go),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for writer in range(3)
    ]
    # open the tables here first, then let the writers go together
    registry = ModelRegistry(ledger, ObjectStore(tmp_path / "store"), cache_dir=tmp_path / "c")
    go.touch()
    pushed = []
    for child in children:
        out, errors = child.communicate(timeout=120)
        assert child.returncode == 0, errors
        pushed.append(json.loads(out))
    numbers = sorted(n for versions in pushed for n in versions)
    assert numbers == list(range(1, 16))
    for writer, versions in enumerate(pushed):
        assert versions == sorted(versions)  # each writer's own pushes in order
        for n, version in enumerate(versions):
            assert registry.load("shared", version) == {"writer": writer, "n": n}
            assert registry.get("shared", version).tags == {"writer": str(writer)}


def test_a_changed_artifact_is_refused_and_a_changed_cache_fetched_again(registry, tmp_path):
    v = registry.push("m", {"weights": list(range(100))})
    local_path = registry.fetch("m")[1]
    assert registry.load("m")["weights"][-1] == 99
    # the cached copy is edited: the next load notices and fetches it again
    local_path.write_bytes(b"not the model")
    assert registry.load("m")["weights"][-1] == 99
    # the stored object itself is replaced: no load may use it
    registry.bucket.put(v.artifact, b"tampered bytes")
    local_path.unlink()
    with pytest.raises(ChecksumMismatch, match=r"model m:1: its artifact's SHA-256 is [0-9a-f]+"):
        registry.load("m")
    assert not local_path.exists()  # nothing unverified was left in the cache
    registry.bucket.delete(v.artifact)
    with pytest.raises(ModelNotFound, match=r"model m:1: is recorded but its artifact .* missing"):
        registry.load("m")


def test_files_and_folders(registry, tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(os.urandom(5000))
    v = registry.push("onnx", path=onnx, framework="onnx")
    assert (v.format, v.filename, v.framework) == ("file", "model.onnx", "onnx")
    loaded = registry.load("onnx")
    assert loaded.name == "model.onnx" and loaded.read_bytes() == onnx.read_bytes()

    folder = tmp_path / "saved"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"layers": 2}')
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "empty").mkdir()
    v = registry.push("saved", path=folder)
    assert (v.format, v.filename) == ("folder", "saved") and v.artifact.endswith("saved.tar")
    copy = registry.load("saved")
    assert copy.name == "saved"
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == [
        "config.json",
        "empty",
        "run.sh",
        "tokenizer",
        "tokenizer/vocab.txt",
    ]
    assert os.access(copy / "run.sh", os.X_OK)
    # the same folder pushed again has the same digest: it depends on content only
    (folder / "config.json").touch()
    assert registry.push("saved", path=folder).sha256 == v.sha256
    # a cached copy changed in place is replaced by a verified one
    (copy / "tokenizer" / "vocab.txt").write_text("changed")
    assert (registry.load("saved") / "tokenizer" / "vocab.txt").read_text() == "a\nb\n"

    import joblib

    joblib.dump({"saved": "by joblib"}, tmp_path / "m.joblib")
    v = registry.push("pickled", path=tmp_path / "m.joblib")
    assert v.format == "joblib" and registry.load("pickled") == {"saved": "by joblib"}


def test_a_folder_with_a_link_is_refused(registry, tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    (folder / "link.bin").symlink_to(folder / "weights.bin")
    with pytest.raises(InvalidModel, match=r"holds 'link\.bin', which is a link"):
        registry.push("saved", path=folder)


def test_objects_that_need_cloudpickle(registry):
    scale = 3

    def double(x):
        return x * 2 * scale / 3

    with pytest.raises(InvalidModel, match="serializer='cloudpickle'"):
        registry.push("fn", double)
    v = registry.push("fn", double, serializer="cloudpickle")
    assert v.format == "cloudpickle" and v.libraries["cloudpickle"]
    assert registry.load("fn")(21) == 42
    assert registry.models()[0].versions == 1  # the refused push recorded nothing


def test_library_versions_that_differ_are_warned_about(registry, digits):
    clf = digits[0]
    registry.push("digits", clf)
    with registry.ledger.begin() as conn:
        conn.execute(
            update(model_versions).values(
                libraries=json.dumps({"python": "3.0", "scikit-learn": "0.20.0"})
            )
        )
    with pytest.warns(LibraryMismatch, match=r"model digits:1 was saved with scikit-learn 0\.20"):
        registry.load("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a different Python alone is not warned about
        with registry.ledger.begin() as conn:
            conn.execute(update(model_versions).values(libraries='{"python": "3.0"}'))
        registry.load("digits")


def test_errors_name_the_model_and_the_fix(registry, tmp_path):
    with pytest.raises(ModelNotFound, match=r"model 'nope': is not in the registry \(it is empty"):
        registry.load("nope")
    registry.push("m", {"n": 1})
    with pytest.raises(ModelNotFound, match=r"model 'nope': .*\(models: m\)"):
        registry.get("nope")
    with pytest.raises(ModelNotFound, match=r"alias 'prod' of model 'm': is not set.*fix: set"):
        registry.load("m", alias="prod")
    with pytest.raises(ModelNotFound, match=r"version 9 of model 'm'"):
        registry.set_alias("m", "prod", 9)
    with pytest.raises(InvalidModel, match="model name 'a/b'"):
        registry.push("a/b", {})
    with pytest.raises(InvalidModel, match="alias '1st'"):
        registry.set_alias("m", "1st", 1)
    with pytest.raises(InvalidModel, match="version 0 of model 'm'"):
        registry.load("m", 0)
    with pytest.raises(InvalidModel, match="exactly one of a model object or path="):
        registry.push("m", {}, path=tmp_path)
    with pytest.raises(InvalidModel, match=r"metric 'accuracy': is nan, not a finite number"):
        registry.push("m", {}, metrics={"accuracy": float("nan")})
    with pytest.raises(InvalidModel, match=r"model file '.*missing.joblib': does not exist"):
        registry.push("m", path=tmp_path / "missing.joblib")
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x05not a pickle")
    with pytest.raises(InvalidModel, match=r"broken.pkl.*cannot be loaded as a pickle"):
        registry.push("m", path=tmp_path / "broken.pkl")
    with pytest.raises(InvalidModel, match="NAME:VERSION"):
        parse_ref("m:latest")
    assert [v.version for v in registry.versions("m")] == [1]  # no refused push left a trace
    assert [o.key for o in registry.bucket.list()] == [registry.get("m").artifact]


def test_an_object_store_that_is_not_a_folder(ledger, tmp_path):
    """The generic fsspec path (what s3:// takes), on the in-memory file system."""
    store = ObjectStore(f"memory://models-test-{uuid.uuid4().hex}")
    registry = ModelRegistry(ledger, store, cache_dir=tmp_path / "cache")
    v = registry.push("m", {"n": 1}, alias="production")
    assert v.uri.startswith("memory://")
    assert registry.load("m", alias="production") == {"n": 1}
    registry.push("m", {"n": 2})
    registry.set_alias("m", "production", 2)
    registry.delete_version("m", 1)
    assert [o.key for o in registry.bucket.list()] == [registry.get("m", 2).artifact]


def test_a_scorer_pins_the_alias_and_ships_only_its_reference(tmp_path, monkeypatch, digits):
    import pickle

    import pyarrow as pa

    from headrace import models

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    clf, X, _ = digits
    models.push("digits", clf, alias="production")
    models.push("digits", {"not": "a model"})
    scorer = models.ModelScorer("digits", alias="production", output="digit")
    assert (scorer.version, scorer.features) == (1, list(X.columns))
    models.set_alias("digits", "production", 2)  # moved while the job runs: not followed

    shipped = pickle.dumps(scorer)
    assert len(shipped) < 4096  # the reference, not the model
    table = pa.Table.from_pandas(X[1500:], preserve_index=False)
    # a worker process: the model loads there, from the project's registry
    code = (
        "import pickle, sys, pyarrow as pa\n"
        "scorer = pickle.loads(sys.stdin.buffer.read())\n"
        "table = pa.ipc.open_stream(open(sys.argv[1], 'rb')).read_all()\n"
        "print(scorer(table).column('digit').to_pylist())\n"
    )
    with (
        pa.OSFile(str(tmp_path / "batch.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "batch.arrow")],
        input=shipped,
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert json.loads(out.stdout) == clf.predict(X[1500:]).tolist()
    assert scorer(X[1500:])["digit"].tolist() == clf.predict(X[1500:]).tolist()


def test_rollback_from_moves_only_if_the_alias_still_points_at_the_version(registry):
    for n in range(2):
        registry.push("m", {"n": n})
    registry.set_alias("m", "production", 1)
    registry.set_alias("m", "production", 2)  # promoted; a server finds version 2 broken
    registry.rollback("m", "production")  # ...but the user has rolled back already
    assert registry.rollback_from("m", "production", 2) is None  # the user's choice stands
    assert registry.get("m", alias="production").version == 1
    assert len(registry.alias_history("m", "production")) == 3
    registry.set_alias("m", "production", 2)
    back = registry.rollback_from("m", "production", 2)
    assert (back.previous, back.version) == (2, 1)
    assert registry.get("m", alias="production").version == 1
