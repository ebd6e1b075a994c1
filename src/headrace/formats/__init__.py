"""File-format converters (GRIB to Parquet, ...).

Import the submodules directly (``from headrace.formats.grib import grib_to_parquet``): each
pulls in its optional dependencies (ecCodes for GRIB) only when used.
"""
