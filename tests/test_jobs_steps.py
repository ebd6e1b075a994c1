"""EMR-style steps (the AWS CLI shorthand, ActionOnFailure across steps, cancel-steps), job
termination and bucket paths, on the local runner (real processes, no engine needed)."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from headrace.jobs import InvalidJobDefinition, JobDefinition, Jobs, SubprocessRunner
from headrace.jobs.bucket_paths import check_spark_s3, resolve_args
from headrace.jobs.emr_shorthand import ShorthandError, parse
from headrace.jobs.errors import JobError, RunnerNotAvailable
from headrace.jobs.steps import Steps, parse_steps
from headrace.ledger import Ledger

PY = sys.executable
ISSUE_STEP = (
    'Type=Spark,Name="Spark Application Step",ActionOnFailure=CONTINUE,'
    "Args=[script.py,--input_path,s3://raw/bank.csv,--output_path,s3://curated/bank/]"
)


@pytest.fixture
def jobs(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    fast = SubprocessRunner(kill_grace=1.0)
    yield Jobs(ledger, tmp_path / "home", runners={"subprocess": fast}, heartbeat_seconds=0.5)
    ledger.close()


def command_step(name: str, code: str, action: str = "CONTINUE") -> str:
    return (
        f'Type=CUSTOM_JAR,Name="{name}",ActionOnFailure={action},Jar=command-runner.jar,'
        f'Args=[{PY},-c,"{code}"]'
    )


# -- the shorthand -----------------------------------------------------------------------------


def test_the_issue_step_parses_as_the_aws_cli_reads_it():
    assert parse(ISSUE_STEP) == {
        "Type": "Spark",
        "Name": "Spark Application Step",
        "ActionOnFailure": "CONTINUE",
        "Args": [
            "script.py",
            "--input_path",
            "s3://raw/bank.csv",
            "--output_path",
            "s3://curated/bank/",
        ],
    }
    # the shell already removed the quotes: the name runs to the next comma
    unquoted = parse("Type=Spark,Name=Spark Application Step,Args=[a.py]")
    assert unquoted["Name"] == "Spark Application Step"


def test_quotes_commas_in_brackets_nesting_and_implicit_lists():
    got = parse(
        'Type=Spark,Args=[--conf,spark.sql.shuffle.partitions=4,\'a,b\',"say \\"hi\\"",[x,y]],'
        'Properties={spark.executor.memory=1g,k="1,2"},Jar=x.jar,Other=a,b,c'
    )
    assert got["Args"] == [
        "--conf",
        "spark.sql.shuffle.partitions=4",
        "a,b",
        'say "hi"',
        ["x", "y"],
    ]
    assert got["Properties"] == {"spark.executor.memory": "1g", "k": "1,2"}
    assert got["Other"] == ["a", "b", "c"]  # AWS: Args=a,b,c is a list
    assert parse("Args=[]")["Args"] == []


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("Type=Spark,Args=[a.py,--x", "not closed with ']'", 17),
        ('Type=Spark,Name="Spark step', 'quote " opened here is not closed', 17),
        ("Type", "expected '=' after the key 'Type'", 5),
        ("Type=Spark,,Name=x", "expected a value", 12),
        ("Type=Spark,Type=Hive", "given twice", 12),
        ("Args=[a]b", "expected ',' or the end", 9),
        ('Args=[a,"b"c]', "expected ',' or ']'", 12),
        ("=Spark", "expected a key", 1),
        ("", "empty", 1),
    ],
)
def test_malformed_shorthand_says_where_and_what(text, message, column):
    with pytest.raises(ShorthandError) as info:
        parse(text, "step 1")
    assert message in str(info.value)
    assert f"at character {column}:" in str(info.value)
    assert "^" in str(info.value) and "step 1" in str(info.value)


def test_steps_from_shorthand_json_and_files(tmp_path):
    steps = parse_steps([ISSUE_STEP, command_step("two", "print(2)", "CANCEL_AND_WAIT")])
    assert [s.name for s in steps] == ["Spark Application Step", "two"]
    assert steps[0].command() == ("spark-submit", steps[0].args)
    assert steps[1].command()[0] == "subprocess"
    assert steps[1].action_on_failure == "CANCEL_AND_WAIT"
    api = {
        "Name": "api",
        "ActionOnFailure": "TERMINATE_JOB_FLOW",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "x.py", "1"]},
    }
    (tmp_path / "steps.json").write_text(json.dumps([api]))
    (from_file,) = parse_steps([f"file://{tmp_path / 'steps.json'}"])
    assert from_file.action_on_failure == "TERMINATE_CLUSTER"
    assert from_file.command() == ("spark-submit", ["x.py", "1"])
    conf = parse_steps(["Type=Spark,Properties={spark.x=1},Args=[a.py]"])[0]
    assert conf.command() == ("spark-submit", ["--conf", "spark.x=1", "a.py"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Type=Hive,Args=[q.sql]", "Type=Hive"),
        ("Type=Spark,ActionOnFailure=RETRY,Args=[a.py]", "ActionOnFailure=RETRY"),
        ("Type=Spark,Name=x", "has no Args"),
        ("Type=CUSTOM_JAR,Jar=s3://b/app.jar,Args=[x]", "not Java main classes"),
        ("Type=Spark,Argz=[a.py]", "unknown keys ['Argz']"),
        ('{"Type": "Spark", "Args": [1]}', "list of strings"),
        ("[{]", "not valid JSON"),
    ],
)
def test_bad_steps_are_refused_with_the_fix(text, message):
    with pytest.raises(InvalidJobDefinition, match="step 1") as info:
        parse_steps([text])
    assert message in str(info.value)


# -- running steps -----------------------------------------------------------------------------


def test_action_on_failure_across_steps(jobs, tmp_path):
    steps = Steps(jobs)
    marker = tmp_path / "ran"
    first = parse_steps(
        [
            command_step("ok", "print('one')"),
            command_step("fails but continue", "raise SystemExit(3)"),
            command_step("runs anyway", f"open(r'{marker}', 'w').write('x')"),
            command_step("fails and cancels", "raise SystemExit(4)", "CANCEL_AND_WAIT"),
            command_step("cancelled", "print('never')"),
        ]
    )
    ids = steps.add("c1", first, working_dir=str(tmp_path))
    final = {s.id: s for s in steps.run("c1")}
    assert [final[i].status for i in ids] == [
        "COMPLETED",
        "FAILED",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert marker.exists()
    assert "exit code 3" in final[ids[1]].reason
    assert f"step {ids[3]}" in final[ids[4]].reason and "CANCEL_AND_WAIT" in final[ids[4]].reason
    assert final[ids[4]].job_id is None  # a cancelled step never ran
    assert jobs.get(final[ids[1]].job_id).exit_code == 3  # each step is a job in the ledger
    assert "one" in jobs.logs(final[ids[0]].job_id)
    # CANCEL_AND_WAIT leaves the cluster waiting: new steps run
    (later,) = steps.add("c1", parse_steps([command_step("later", "print(1)")]))
    assert steps.run("c1")[0].id == later and steps.get(later).status == "COMPLETED"
    # listed newest first, as EMR lists them; filtered by state
    assert [s.id for s in steps.list("c1")][:2] == [later, ids[4]]
    assert {s.id for s in steps.list("c1", ["FAILED"])} == {ids[1], ids[3]}
    shape = steps.get(ids[0]).describe()
    assert shape["Status"]["State"] == "COMPLETED" and shape["Config"]["Args"][0] == PY


def test_terminate_cluster_refuses_later_steps(jobs):
    steps = Steps(jobs)
    ids = steps.add(
        "c2",
        parse_steps(
            [
                command_step("boom", "raise SystemExit(1)", "TERMINATE_CLUSTER"),
                command_step("next", "print(1)"),
            ]
        ),
    )
    final = {s.id: s.status for s in steps.run("c2")}
    assert final == {ids[0]: "FAILED", ids[1]: "CANCELLED"}
    with pytest.raises(JobError, match=r"'c2'.*terminated.*another cluster id"):
        steps.add("c2", parse_steps([command_step("x", "print(1)")]))


def test_cancel_pending_and_running_steps(jobs):
    steps = Steps(jobs)
    slow, after = steps.add(
        "c3",
        parse_steps(
            [command_step("sleeps", "import time; time.sleep(60)"), command_step("p", "print(1)")]
        ),
    )
    assert steps.cancel("c3", [after])[0].status == "CANCELLED"
    done: list = []
    thread = threading.Thread(target=lambda: done.append(steps.run("c3")))
    thread.start()
    deadline = time.time() + 20
    while steps.get(slow).status != "RUNNING" and time.time() < deadline:
        time.sleep(0.05)
    began = time.time()
    steps.cancel("c3", [slow], "no longer needed")
    thread.join(30)
    assert time.time() - began < 10
    record = steps.get(slow)
    assert record.status == "CANCELLED" and record.reason == "no longer needed"
    job = jobs.get(record.job_id)
    assert job.status == "FAILED" and job.status_reason.startswith("no longer needed")
    assert job.attempts == 1  # a terminated job is not retried


def test_terminate_a_job_that_has_not_started(jobs):
    job_id = jobs.submit(JobDefinition("t", [PY, "-c", "print(1)"]), job_name="t")
    assert jobs.terminate(job_id, "changed my mind").status == "FAILED"
    assert jobs.run(job_id).status_reason == "changed my mind"  # running it changes nothing


# -- bucket paths ------------------------------------------------------------------------------


def test_bucket_paths_resolve_for_each_engine(tmp_path):
    root = str(tmp_path / "buckets")
    args = ["s3://raw/in.csv", "--output_path=s3a://curated/out/", "plain", "s3://raw"]
    assert resolve_args(args, root, "subprocess") == [
        f"{root}/raw/in.csv",
        f"--output_path={root}/curated/out/",
        "plain",
        f"{root}/raw",
    ]
    assert resolve_args(args, root, "spark-submit")[0] == f"file://{root}/raw/in.csv"
    s3 = resolve_args(args, "s3://lake/hr", "spark-submit")
    assert s3[:2] == ["s3a://lake/hr/raw/in.csv", "--output_path=s3a://lake/hr/curated/out/"]
    assert resolve_args(args, "s3://lake/hr", "ray")[0] == "s3://lake/hr/raw/in.csv"
    assert resolve_args(args, None, "ray") == args  # outside a project: as written
    with pytest.raises(InvalidJobDefinition, match="not a bucket name"):
        resolve_args(["s3://Bad_Bucket/x"], root, "ray")
    # Spark reads S3 only with the hadoop-aws jar, which pyspark does not ship
    with pytest.raises(RunnerNotAvailable, match="hadoop-aws"):
        check_spark_s3(s3, str(tmp_path))
    check_spark_s3(["--jars", "/opt/hadoop-aws-3.5.0.jar", *s3], str(tmp_path))
    check_spark_s3(resolve_args(args, root, "spark-submit"), str(tmp_path))


def test_definition_engines_and_clusters():
    assert JobDefinition("a", ["x.py"], runner="spark").runner == "spark-submit"
    assert JobDefinition("a", ["x"], runner="local").runner == "subprocess"
    with pytest.raises(InvalidJobDefinition, match="subprocess runner runs locally"):
        JobDefinition("a", ["x"], cluster="spark://h:7077")
    with pytest.raises(InvalidJobDefinition, match="container images run on the subprocess"):
        JobDefinition("a", ["x"], runner="ray", image="python:3.11")


# -- the command line --------------------------------------------------------------------------


def test_cli_add_steps_list_steps_and_bad_input(tmp_path, monkeypatch):
    from headrace.cli_jobs import jobs_app

    monkeypatch.chdir(tmp_path)
    env = {"HEADRACE_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    cli = CliRunner()
    ok = command_step("hello", "print('hello from a step')")
    bad = command_step("bad", "raise SystemExit(2)")
    result = cli.invoke(
        jobs_app,
        ["add-steps", "--cluster-id", "j-1", "--wait", "--steps", ok, bad],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output  # a step failed
    assert "hello from a step" in result.output
    ids = json.loads(result.output[result.output.index("{") : result.output.index("}") + 1])
    listed = cli.invoke(
        jobs_app, ["list-steps", "--cluster-id", "j-1", "--json"], env=env, catch_exceptions=False
    )
    states = {s["Id"]: s["Status"]["State"] for s in json.loads(listed.output)["Steps"]}
    assert states == dict(zip(ids["StepIds"], ["COMPLETED", "FAILED"], strict=True))
    table = cli.invoke(jobs_app, ["list-steps", "--cluster-id", "j-1"], env=env)
    assert "COMPLETED" in table.output and "hello" in table.output
    malformed = cli.invoke(jobs_app, ["add-steps", "--steps", "Type=Spark,Args=[a.py"], env=env)
    assert malformed.exit_code != 0
    assert "not closed with ']'" in str(malformed.exception or malformed.output)


def test_the_steps_in_the_docs_parse_and_the_documented_error_is_the_real_one():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "jobs.md").read_text()
    quoted = re.findall(r"'(Type=[^']+)'", text)
    assert len(quoted) >= 3
    for step in parse_steps(quoted):
        assert step.args
    with pytest.raises(ShorthandError) as info:
        parse_steps(["Type=Spark,Args=[a.py,--x"])
    shown = str(info.value).split(" (fix:")[0]
    assert shown in text, shown


def test_cli_submit_engine_local_resolves_bucket_paths_and_streams(tmp_path, monkeypatch):
    from headrace.cli_jobs import jobs_app

    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    (home / "buckets" / "raw").mkdir(parents=True)
    (home / "buckets" / "raw" / "in.txt").write_text("from the bucket")
    (tmp_path / "show.py").write_text(
        "import sys\nprint('first line', flush=True)\nprint(open(sys.argv[1]).read())\n"
        "sys.exit(int(sys.argv[2]))\n"
    )
    env = {"HEADRACE_HOME": str(home), "COLUMNS": "200"}
    cli = CliRunner()
    args = ["submit", "--engine", "local", "show.py", "--wait", "--", "s3://raw/in.txt"]
    ok = cli.invoke(jobs_app, [*args, "0"], env=env, catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    assert "first line" in ok.output and "from the bucket" in ok.output
    failed = cli.invoke(jobs_app, [*args, "4"], env=env, catch_exceptions=False)
    assert failed.exit_code == 1 and "exit code 4" in failed.output
    listed = cli.invoke(jobs_app, ["list", "--json"], env=env, catch_exceptions=False)
    described = json.loads(listed.output)
    assert [d["container"]["exitCode"] for d in described] == [4, 0]
    assert described[0]["container"]["command"][2] == str(home / "buckets" / "raw" / "in.txt")
    missing = cli.invoke(jobs_app, ["submit", "--engine", "local", "nope.py"], env=env)
    assert missing.exit_code != 0 and "does not exist" in missing.output
    bad = cli.invoke(jobs_app, ["submit", "--engine", "flink", "show.py"], env=env)
    assert bad.exit_code != 0 and "use local, ray, spark" in bad.output


def test_cli_cancel_and_follow_a_background_job(tmp_path, monkeypatch):
    """`submit --engine` without --wait starts the job in the background; `logs --follow`
    streams it and `cancel` ends it FAILED with the reason, its process gone."""
    import subprocess

    monkeypatch.chdir(tmp_path)
    (tmp_path / "slow.py").write_text(
        "import time\nprint('working', flush=True)\ntime.sleep(600)\n"
    )
    env = {**os.environ, "HEADRACE_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    headrace = [sys.executable, "-m", "headrace.cli_jobs"]
    submitted = subprocess.run(
        [*headrace, "submit", "--engine", "local", "slow.py"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )  # fmt: skip
    job_id = submitted.stdout.strip()
    follower = subprocess.Popen(
        [*headrace, "logs", "--follow", job_id], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert follower.stdout.readline().startswith("headrace: python is")  # the runtime's
        assert follower.stdout.readline().strip() == "working"
    finally:  # the job sleeps for ten minutes: whatever happened above, end it
        cancelled = subprocess.run(
            [*headrace, "cancel", job_id, "--reason", "enough"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    assert "FAILED" in cancelled.stderr and "enough" in cancelled.stderr
    assert follower.wait(30) == 1  # the followed job did not succeed
    ledger = Ledger(f"sqlite:///{tmp_path / 'home' / 'ledger.db'}")
    try:
        job = Jobs(ledger, tmp_path / "home").get(job_id)
        assert job.status == "FAILED" and job.status_reason.startswith("enough")
        assert job.exit_code == 143  # SIGTERM
    finally:
        ledger.close()
