"""Bucket paths in a job's arguments, rewritten to something its engine can read.

Users pass object paths as they would on AWS: `s3://BUCKET/KEY` (also `s3a://` and `s3n://`,
as EMR scripts often spell them), alone or as the value of `--name=s3://...`. `BUCKET` is a
bucket of the project's storage (the `storage` setting), and what the engine is given depends
on where that storage lives:

* **a local folder** (the default, `<home>/buckets`): the object is the file
  `<storage>/BUCKET/KEY`. Local and Ray jobs get that absolute path (a local Ray head runs on
  this machine), Spark jobs the `file://` URL, so Spark's default file system (which may be
  HDFS on a real cluster) is not consulted. Nothing else is needed. A Ray cluster at another
  address does not see this machine's files: give it storage on S3.
* **S3** (`storage = "s3://data-lake/headrace"`): the object is
  `s3://data-lake/headrace/BUCKET/KEY`. Local and Ray jobs read it with fsspec/s3fs or pyarrow
  and the usual AWS credentials (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile, or an
  instance role). Spark reads `s3a://...`, which needs `hadoop-aws-<hadoop version>.jar` and
  the AWS SDK v2 bundle on its classpath (`--jars`, or copied into `$SPARK_HOME/jars`) and the
  credentials (environment, or `--conf spark.hadoop.fs.s3a.access.key=...`). pyspark does not
  ship those jars and headrace does not download them: a Spark submission with S3 paths and
  no `hadoop-aws` jar in sight is refused with the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from headrace.errors import InvalidKey
from headrace.jobs.errors import InvalidJobDefinition, RunnerNotAvailable
from headrace.storage.keys import validate_bucket_name

_S3 = re.compile(r"^(s3|s3a|s3n)://([^/]+)(?:/(.*))?$")
_OPTION = re.compile(r"^(--?[A-Za-z0-9_.-]+=)(.*)$")


def resolve_args(args: list[str], storage: str | None, runner: str) -> list[str]:
    """`args` with every bucket path rewritten for `runner` (subprocess, ray or spark-submit).
    Without a storage setting (a job started outside a project) they stay as written."""
    if not storage:
        return list(args)
    return [_resolve_arg(arg, storage, runner) for arg in args]


def _resolve_arg(arg: str, storage: str, runner: str) -> str:
    option = _OPTION.match(arg)
    prefix, value = (option.group(1), option.group(2)) if option else ("", arg)
    match = _S3.match(value)
    if match is None:
        return arg
    bucket, key = match.group(2), match.group(3) or ""
    try:
        validate_bucket_name(bucket)
    except InvalidKey as exc:
        raise InvalidJobDefinition(
            f"job argument {arg!r}",
            f"{bucket!r} is not a bucket name headrace knows ({exc})",
            "name a bucket of the project's storage: s3://BUCKET/KEY",
        ) from None
    if "://" not in storage:  # a local folder
        path = str(Path(storage, bucket, key).resolve()) + ("/" if key.endswith("/") else "")
        return prefix + ("file://" + path if runner == "spark-submit" else path)
    scheme, _, root = storage.partition("://")
    if scheme not in ("s3", "s3a", "s3n"):
        raise InvalidJobDefinition(
            f"job argument {arg!r}",
            f"the project's storage {storage!r} is neither a local folder nor S3",
            "job engines read bucket paths from a local folder or S3; change `storage`",
        )
    tail = f"{root.rstrip('/')}/{bucket}/{key}"
    return prefix + ("s3a://" if runner == "spark-submit" else "s3://") + tail


def uses_s3a(args: list[str]) -> bool:
    return any(_S3.match(_OPTION.sub(r"\2", a)) for a in args)


def check_spark_s3(args: list[str], spark_home: str) -> None:
    """Refuse a Spark submission that reads S3 without the jars that let Spark do so."""
    if not uses_s3a(args):
        return
    jars = [p.name for p in Path(spark_home, "jars").glob("hadoop-aws-*.jar")]
    for i, arg in enumerate(args):
        if arg == "--jars" and i + 1 < len(args):
            jars += [os.path.basename(j) for j in args[i + 1].split(",") if "hadoop-aws" in j]
        elif arg.startswith("--jars=") and "hadoop-aws" in arg:
            jars.append(arg)
    if not jars:
        raise RunnerNotAvailable(
            "spark-submit job",
            "reads S3 paths, but Spark has no hadoop-aws jar (pyspark does not ship it, and "
            "this machine cannot download it)",
            f"copy hadoop-aws-<hadoop version>.jar and the AWS SDK v2 bundle into "
            f"{spark_home}/jars or pass them with --jars, and give Spark AWS credentials; or "
            "keep the project's storage in a local folder",
        )
