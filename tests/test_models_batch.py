"""predict_batch on every kind of batch an engine hands a model, with a real scikit-learn model
trained on its bundled digits data."""

import warnings

import numpy as np
import pyarrow as pa
import pytest

from headrace.models import PredictionError, predict_batch

pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")

PIXELS = [f"p{i}" for i in range(64)]


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits
    from sklearn.tree import DecisionTreeClassifier

    digits = load_digits(as_frame=True)
    frame = digits.data  # named columns: the estimator remembers them
    on_frame = DecisionTreeClassifier(random_state=0).fit(frame, digits.target)
    on_array = DecisionTreeClassifier(random_state=0).fit(frame.to_numpy(), digits.target)
    pixels = zip(PIXELS, frame.columns, strict=True)
    table = pa.table({name: frame[col].to_numpy() for name, col in pixels})
    return frame, table, on_frame, on_array, on_frame.predict(frame)


def test_pandas_batch_with_the_features_the_model_remembers(data):
    frame, _, on_frame, _, expected = data
    batch = frame.assign(id=range(len(frame)))
    scored = predict_batch(on_frame, batch)
    assert list(scored.columns) == [*batch.columns, "prediction"]
    assert (scored["prediction"].to_numpy() == expected).all()
    assert "prediction" not in batch.columns  # the batch given is left as it was


def test_arrow_table_and_record_batch(data):
    _, table, _, on_array, expected = data
    scored = predict_batch(on_array, table, features=PIXELS, output="digit")
    assert isinstance(scored, pa.Table) and scored.column_names == [*PIXELS, "digit"]
    assert scored.column("digit").to_numpy().tolist() == expected.tolist()
    batch = table.slice(0, 100).to_batches()[0]
    scored = predict_batch(on_array, batch, features=PIXELS)
    assert isinstance(scored, pa.RecordBatch)
    assert scored.column(64).to_pylist() == expected[:100].tolist()
    # scoring again replaces the column instead of adding a second one
    again = predict_batch(on_array, scored, features=PIXELS)
    assert again.num_columns == 65


def test_a_model_fitted_on_a_frame_gets_a_frame_from_arrow_and_dicts(data):
    frame, _, on_frame, _, expected = data
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        scored = predict_batch(on_frame, table)
        as_dict = {c: frame[c].to_numpy() for c in frame.columns}
        scored_dict = predict_batch(on_frame, as_dict)
    assert scored.column("prediction").to_numpy().tolist() == expected.tolist()
    assert isinstance(scored_dict, dict) and (scored_dict["prediction"] == expected).all()


def test_ray_style_dict_of_arrays_and_probabilities(data):
    _, table, _, on_array, expected = data
    batch = {name: table.column(name).to_numpy() for name in PIXELS}
    scored = predict_batch(on_array, batch, features=PIXELS)
    assert (scored["prediction"] == expected).all()
    proba = predict_batch(on_array, table, features=PIXELS, method="predict_proba", output="p")
    assert [c for c in proba.column_names if c.startswith("p_")] == [f"p_{i}" for i in range(10)]
    best = np.argmax(np.column_stack([proba.column(f"p_{i}") for i in range(10)]), axis=1)
    assert best.tolist() == expected.tolist()


def test_an_empty_batch_scores_to_an_empty_column(data):
    frame, table, on_frame, on_array, _ = data
    empty = predict_batch(on_array, table.slice(0, 0), features=PIXELS)
    assert empty.num_rows == 0 and "prediction" in empty.column_names
    assert len(predict_batch(on_frame, frame.iloc[:0])["prediction"]) == 0


def test_bad_batches_are_named(data):
    _, table, _, on_array, _ = data
    with pytest.raises(PredictionError, match=r"lacks the feature column\(s\) p63"):
        predict_batch(on_array, table.drop_columns(["p63"]), features=PIXELS)
    with pytest.raises(PredictionError, match=r"does not say which columns it reads.*features="):
        predict_batch(on_array, table)
    with pytest.raises(PredictionError, match="has no method 'decide'"):
        predict_batch(on_array, table, features=PIXELS, method="decide")
    with pytest.raises(PredictionError, match="is not a pandas DataFrame, an Arrow table"):
        predict_batch(on_array, [[0] * 64], features=PIXELS)

    class Short:
        def predict(self, X):
            return np.zeros(len(X) - 1)

    with pytest.raises(PredictionError, match=r"Short.predict: returned 9 value\(s\) for a batch"):
        predict_batch(Short(), table.slice(0, 10), features=PIXELS)
