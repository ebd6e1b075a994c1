"""Bank marketing on Spark: UDFs, a scikit-learn model in a pandas UDF, and a Spark ML pipeline.

    spark-submit bank_marketing.py --input_path bank.csv --output_path out/
    headrace jobs add-steps --steps 'Type=Spark,Name="Spark Application Step",
        ActionOnFailure=CONTINUE,Args=[bank_marketing.py,--input_path,s3://raw/bank.csv,
        --output_path,s3://curated/bank/]'

Reads the UCI bank-marketing CSV (`;`-separated, header, types inferred), then:

1. `month_as_int`, a plain Python function, registered for SQL with `spark.udf.register` and
   used through `udf(...)` and as a `@udf`; the three must agree.
2. A scikit-learn model trained on the driver over 13 feature columns, applied to every row
   by a `@pandas_udf` that wraps its `predict` (the model travels to the executors with the
   function, once per worker process).
3. A Spark ML pipeline (string indexing, one-hot encoding, assembling, scaling,
   `LogisticRegression`) fitted on a split and evaluated on the rest.

Writes Parquet under `--output_path`: `sklearn_scored/` and `spark_ml_predictions/`, and prints
one `RESULT {json}` line with the counts and scores.
"""

from __future__ import annotations

import argparse
import json
import time

print(f"bank_marketing: started at {time.time():.3f}", flush=True)

import pandas as pd  # noqa: E402
from pyspark.ml import Pipeline  # noqa: E402
from pyspark.ml.classification import LogisticRegression  # noqa: E402
from pyspark.ml.evaluation import BinaryClassificationEvaluator  # noqa: E402
from pyspark.ml.feature import (  # noqa: E402
    OneHotEncoder,
    StandardScaler,
    StringIndexer,
    VectorAssembler,
)
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.functions import pandas_udf, udf  # noqa: E402
from pyspark.sql.types import IntegerType  # noqa: E402

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
BINARY = ["default", "housing", "loan"]
FEATURES = [  # the 13 columns the scikit-learn model reads
    "age", "balance", "day", "month_int", "duration", "campaign", "pdays", "previous",
    "default_yes", "housing_yes", "loan_yes", "contact_cellular", "poutcome_success",
]  # fmt: skip
CATEGORICAL = ["job", "marital", "education", "contact", "poutcome"]


def month_as_int(month: str | None) -> int | None:
    """'jan' -> 1 ... 'dec' -> 12; anything else -> None."""
    if month is None:
        return None
    month = month.strip().lower()[:3]
    return MONTHS.index(month) + 1 if month in MONTHS else None


@udf(returnType=IntegerType())
def month_as_int_decorated(month: str | None) -> int | None:
    return month_as_int(month)


def with_features(df):  # type: ignore[no-untyped-def]
    out = df.withColumn("month_int", month_as_int_decorated(F.col("month")))
    for name in BINARY:
        out = out.withColumn(f"{name}_yes", (F.col(name) == "yes").cast("int"))
    return (
        out.withColumn("contact_cellular", (F.col("contact") == "cellular").cast("int"))
        .withColumn("poutcome_success", (F.col("poutcome") == "success").cast("int"))
        .withColumn("label", (F.col("y") == "yes").cast("int"))
    )


def sklearn_model(train_pdf: pd.DataFrame):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0, n_jobs=1)
    return model.fit(train_pdf[FEATURES].to_numpy(dtype="float64"), train_pdf["label"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_path", required=True)
    parser.add_argument("--output_path", required=True)
    args = parser.parse_args()
    spark = SparkSession.builder.appName("bank-marketing").getOrCreate()

    df = spark.read.csv(args.input_path, sep=";", inferSchema=True, header=True)
    rows = df.count()

    # 1. the same Python function three ways: SQL, udf(...), @udf
    spark.udf.register("month_as_int", month_as_int, IntegerType())
    month_as_int_udf = udf(month_as_int, IntegerType())
    df.createOrReplaceTempView("bank")
    three = spark.sql("SELECT month, month_as_int(month) AS via_sql FROM bank").select(
        "month",
        "via_sql",
        month_as_int_udf(F.col("month")).alias("via_udf"),
        month_as_int_decorated(F.col("month")).alias("via_decorator"),
    )
    disagree = three.where(
        (F.col("via_sql") != F.col("via_udf")) | (F.col("via_udf") != F.col("via_decorator"))
    ).count()
    if disagree:
        raise SystemExit(f"month_as_int: {disagree} rows where the three UDFs disagree")

    features = with_features(df).cache()
    train, test = features.randomSplit([0.8, 0.2], seed=42)

    # 2. a scikit-learn model's predict over 13 columns, as a pandas UDF
    model = sklearn_model(train.select(*FEATURES, "label").toPandas())

    @pandas_udf("double")
    def predict(batch: pd.DataFrame) -> pd.Series:
        return pd.Series(model.predict(batch[FEATURES].to_numpy(dtype="float64")), dtype="float64")

    scored = features.withColumn("sklearn_prediction", predict(F.struct(*FEATURES)))
    scored.select("age", "job", "month", "month_int", "y", "sklearn_prediction").write.mode(
        "overwrite"
    ).parquet(f"{args.output_path.rstrip('/')}/sklearn_scored")
    right = scored.where(F.col("sklearn_prediction") == F.col("label")).count()
    sklearn_accuracy = right / max(rows, 1)

    # 3. feature engineering + LogisticRegression, as a Spark ML pipeline
    stages = [
        StringIndexer(inputCols=CATEGORICAL, outputCols=[f"{c}_idx" for c in CATEGORICAL]),
        OneHotEncoder(
            inputCols=[f"{c}_idx" for c in CATEGORICAL],
            outputCols=[f"{c}_vec" for c in CATEGORICAL],
        ),
        VectorAssembler(
            inputCols=[f for f in FEATURES if f not in ("contact_cellular", "poutcome_success")]
            + [f"{c}_vec" for c in CATEGORICAL],
            outputCol="raw_features",
        ),
        StandardScaler(inputCol="raw_features", outputCol="features"),
        LogisticRegression(featuresCol="features", labelCol="label", maxIter=50),
    ]
    pipeline_model = Pipeline(stages=stages).fit(train)
    predictions = pipeline_model.transform(test)
    auc = BinaryClassificationEvaluator(labelCol="label").evaluate(predictions)
    predictions.select("age", "job", "month_int", "y", "label", "prediction").write.mode(
        "overwrite"
    ).parquet(f"{args.output_path.rstrip('/')}/spark_ml_predictions")

    result = {
        "rows": rows,
        "test_rows": predictions.count(),
        "sklearn_accuracy": round(sklearn_accuracy, 4),
        "logistic_regression_auc": round(auc, 4),
    }
    print("RESULT " + json.dumps(result), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
