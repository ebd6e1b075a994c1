"""The Spark job of benchmarks/job_submit.py: a scikit-learn model's predict over 13 columns in
a pandas UDF, over N generated rows. Prints `RESULT {"seconds", "prediction_sum", "rows"}`."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from sklearn.linear_model import LogisticRegression

FEATURES = [f"f{i}" for i in range(13)]


def main() -> None:
    rows = int(sys.argv[1])
    began = time.time()
    spark = SparkSession.builder.appName("pandas-udf-bench").getOrCreate()
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 13))
    labels = (train[:, 0] + 0.5 * train[:, 1] - train[:, 2] > 0).astype(int)
    model = LogisticRegression().fit(train, labels)

    @pandas_udf("double")
    def predict(batch: pd.DataFrame) -> pd.Series:
        return pd.Series(model.predict(batch.to_numpy(dtype="float64")), dtype="float64")

    df = spark.range(rows).select(
        *[
            (F.hash("id", F.lit(i)) % 1000 / 250.0 - 2.0).alias(name)
            for i, name in enumerate(FEATURES)
        ]
    )
    total = df.select(predict(F.struct(*FEATURES)).alias("p")).agg(F.sum("p")).first()[0]
    seconds = time.time() - began
    print("RESULT " + json.dumps({"seconds": seconds, "prediction_sum": total, "rows": rows}))
    spark.stop()


if __name__ == "__main__":
    main()
