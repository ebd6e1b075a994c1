"""The weather pipeline: every GRIB file landing in `landing/` becomes Parquet in `curated/`."""

from headrace import App

app = App("weather")

# Registered by reference: lambda_function.py does not need to import the App.
app.function(
    "lambda_function.handler",
    name="grib_to_parquet",
    timeout=300,
    memory=2048,
    tmp_size=2048,
    retries=2,
)
# NDFD and other services publish GRIB2 as .bin, so that suffix counts too.
app.on_object_created(
    "grib_to_parquet", bucket="landing", suffix=(".grib", ".grib2", ".grb", ".grb2", ".bin")
)
