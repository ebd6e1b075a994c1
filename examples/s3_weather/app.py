"""The Lambda deployment, declared: handler, environment variables, requirements, trigger."""

from headrace import App

app = App("s3-weather")

app.function(
    "lambda_function.lambda_handler",
    name="weather",
    timeout=300,
    # Lambda's environment variables: where the handler writes its Parquet
    environment={"S3path": "s3://curated/weather/"},
    # a Lambda layer's packages: installed for this function when missing from the environment
    requirements=["boto3", "pygrib", "pandas", "s3fs"],
)
# output_bucket: `headrace invocations --check-outputs` flags a run that wrote nothing there
app.on_object_created(
    "weather", bucket="landing", suffix=(".grib", ".grib2", ".grb"), output_bucket="curated"
)
