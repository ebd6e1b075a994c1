"""One execution's bad luck stays its own: loops, bad names, failing writes, interpreter errors.

In process through `execute()`, and under the real coordinator beside a file trigger whose
objects must keep being converted while the bad executions run.
"""

import threading
import time
from pathlib import Path

import pytest

import headrace.workflows
from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.ledger import executions as store
from headrace.server.coordinator import Coordinator
from headrace.workflows import api, execute
from headrace.workflows.asl import DefinitionError
from headrace.workflows.driver import SLICE_EVENTS
from headrace.workflows.history import Event
from headrace.workflows.interpreter import Interpreter, UnknownEvent
from headrace.workflows.names import InvalidExecutionName, check_execution_name, name_for
from tests import e2e_helpers

APP_DIR = Path(__file__).parent / "apps" / "loops"
QUOTA_CAUSE = "The execution reached the maximum number of history events (25000)."

PASS_SELF = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "A"}}}
PING_PONG = {
    "StartAt": "Ping",
    "States": {"Ping": {"Type": "Pass", "Next": "Pong"}, "Pong": {"Type": "Pass", "Next": "Ping"}},
}
CHOICE_SELF = {
    "StartAt": "Again",
    "States": {
        "Again": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.go", "BooleanEquals": True, "Next": "Again"}],
            "Default": "Done",
        },
        "Done": {"Type": "Succeed"},
    },
}


def _map(**fields):
    return {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
                "End": True,
                **fields,
            }
        },
    }


# -- execute(), as documented ------------------------------------------------------------------


def test_the_documented_call_works():
    # docs/workflows.md: `headrace.workflows.execute(definition, input, resources={...})`
    definition = {
        "StartAt": "T",
        "States": {"T": {"Type": "Task", "Resource": "headrace:function:inc", "End": True}},
    }
    result = headrace.workflows.execute(
        definition, {"n": 1}, resources={"inc": lambda e: e["n"] + 1}
    )
    assert isinstance(result, headrace.workflows.ExecutionResult)
    assert result.status == "SUCCEEDED" and result.output == 2


def test_task_timeout_bounds_the_wall_time():
    definition = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "headrace:function:slow",
                "TimeoutSeconds": 1,
                "End": True,
            }
        },
    }
    started = time.monotonic()
    result = execute(definition, {}, resources={"slow": lambda e: time.sleep(6)})
    elapsed = time.monotonic() - started
    assert result.status == "FAILED" and result.error == "States.Timeout"
    assert 1.0 <= elapsed < 2.0, elapsed


def test_execute_timeout_bounds_the_wall_time_of_a_hung_task_and_of_a_loop():
    hung = {
        "StartAt": "T",
        "States": {"T": {"Type": "Task", "Resource": "headrace:function:slow", "End": True}},
    }
    started = time.monotonic()
    result = execute(hung, {}, resources={"slow": lambda e: time.sleep(6)}, timeout=1)
    assert result.status == "ABORTED" and result.error == "States.Timeout"
    assert time.monotonic() - started < 2.0
    # a loop whose every step is slow (a large input copied by Parameters) stops on time too
    slow_loop = {
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Parameters": {"v.$": "$.v"}, "Next": "A"}},
    }
    started = time.monotonic()
    result = execute(slow_loop, {"v": list(range(20_000))}, timeout=1)
    assert result.status == "ABORTED" and result.error == "States.Timeout"
    assert time.monotonic() - started < 1.5


def test_tasks_beyond_max_workers_wait_without_spinning():
    definition = _map(ItemsPath="$.items")
    definition["States"]["Fan"]["ItemProcessor"] = {
        "StartAt": "T",
        "States": {"T": {"Type": "Task", "Resource": "headrace:function:nap", "End": True}},
    }
    started, cpu = time.monotonic(), time.process_time()
    result = execute(
        definition,
        {"items": list(range(8))},
        resources={"nap": lambda e: time.sleep(0.4) or e},
        max_workers=2,
    )
    assert result.status == "SUCCEEDED" and result.output == list(range(8))
    assert 1.6 <= time.monotonic() - started < 3.0  # 4 rounds of 2
    assert time.process_time() - cpu < 0.5  # waited, did not poll


@pytest.mark.parametrize(
    "definition", [PASS_SELF, PING_PONG, CHOICE_SELF], ids=lambda d: d["StartAt"]
)
def test_a_machine_that_never_ends_fails_at_the_history_quota(definition):
    result = execute(definition, {"go": True}, timeout=60)
    assert (result.status, result.error, result.cause) == ("FAILED", "States.Runtime", QUOTA_CAUSE)
    assert len(result.history) == 25_000 and result.history[-1]["type"] == "ExecutionFailed"


def _fan_out(inner: dict, mode: str | None) -> dict:
    processor = {"StartAt": "Inner", "States": {"Inner": inner}}
    if mode:
        processor["ProcessorConfig"] = {"Mode": mode}
    return {
        "StartAt": "Fan",
        "States": {
            "Fan": {"Type": "Map", "ItemsPath": "$.items", "ItemProcessor": processor, "End": True}
        },
    }


def test_distributed_map_iterations_have_histories_of_their_own():
    items = {"items": list(range(7000))}  # 4 events an item: 28,000 in all
    inline = execute(_fan_out({"Type": "Pass", "End": True}, None), items)
    assert (inline.status, inline.cause) == ("FAILED", QUOTA_CAUSE)
    distributed = execute(_fan_out({"Type": "Pass", "End": True}, "DISTRIBUTED"), items)
    assert distributed.status == "SUCCEEDED" and len(distributed.history) > 28_000
    # and a loop inside one iteration still ends, at that iteration's quota
    looping = execute(_fan_out({"Type": "Pass", "Next": "Inner"}, "DISTRIBUTED"), {"items": [1]})
    assert looping.status == "FAILED" and looping.error == "States.Runtime"
    assert looping.cause == f"Map iteration 'Fan[0]': {QUOTA_CAUSE}"


# -- interpreter errors become execution failures ----------------------------------------------


@pytest.mark.parametrize("value", [{"a": 1}, "NoNumber", -1, 1.5, True])
def test_max_concurrency_path_that_is_not_a_number_fails_with_states_runtime(value):
    result = execute(
        _map(ItemsPath="$.items", MaxConcurrencyPath="$.mc"), {"items": [1], "mc": value}
    )
    assert result.status == "FAILED" and result.error == "States.Runtime", result
    assert "MaxConcurrencyPath" in result.cause and "non-negative integer" in result.cause


def test_wait_seconds_path_that_is_not_a_number_fails_with_states_runtime():
    definition = {
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "SecondsPath": "$.s", "End": True}},
    }
    for value in ("abc", {"a": 1}, -5):
        result = execute(definition, {"s": value}, timeout=5)
        assert result.status == "FAILED" and result.error == "States.Runtime", (value, result)
        assert "SecondsPath" in result.cause


def test_item_reader_without_bucket(tmp_path):
    reader = {"Resource": "arn:aws:states:::s3:getObject", "Parameters": {"Key": "items.json"}}
    with pytest.raises(DefinitionError, match=r"ItemReader.Parameters.*need 'Bucket'"):
        execute(_map(ItemReader=reader), {}, storage=str(tmp_path))
    # a Bucket chosen at run time that turns out empty: a clear failure, not KeyError
    reader["Parameters"] = {"Bucket.$": "$.bucket", "Key": "items.json"}
    result = execute(_map(ItemReader=reader), {"bucket": None}, storage=str(tmp_path))
    assert result.status == "FAILED" and result.error == "States.ItemReaderFailed"
    assert result.cause.startswith("ItemReader Parameters.Bucket is None (fix:"), result.cause


def test_a_failing_result_writer_fails_the_map_with_its_error(tmp_path):
    writer = {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {"Bucket": "results", "Prefix": "../../escape"},
    }
    result = execute(
        _map(ItemsPath="$.items", ResultWriter=writer), {"items": [1]}, storage=str(tmp_path)
    )
    assert result.status == "FAILED" and result.error == "States.ResultWriterFailed"
    assert "'..' segment" in result.cause
    assert not (tmp_path.parent / "escape").exists()


def test_an_unforeseen_error_in_the_interpreter_fails_the_execution():
    # a definition that skipped validation (Next names no state): decide() must not raise
    machine = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}
    interp = Interpreter(machine, {"Id": "x", "Name": "x"})
    interp.apply(Event(1, "ExecutionStarted", time.time(), "", {"input": {}}))
    while decisions := interp.decide(time.time()):
        for kind, scope, details in decisions:
            interp.apply(Event(interp.length + 1, kind, time.time(), scope, details))
    assert interp.status == "FAILED" and interp.error == "States.Runtime"
    assert interp.cause == "unexpected KeyError in state 'Nowhere': 'Nowhere'"


def test_unknown_history_events_raise():
    interp = Interpreter(PASS_SELF, {"Id": "x", "Name": "run-1"})
    interp.apply(Event(1, "ExecutionStarted", time.time(), "", {"input": {}}))
    with pytest.raises(UnknownEvent, match=r"history event 2 \('PassStateTeleported'\)"):
        interp.apply(Event(2, "PassStateTeleported", time.time(), "", {}))
    assert interp.length == 1 and len(interp.history) == 1


# -- execution names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 81,
        "../../x",
        "a/b",
        "a b",
        "tab\there",
        "a<b",
        "{x}",
        "[x]",
        "a?",
        "a*",
        'a"b',
        "a#b",
        "a%b",
        "a\\b",
        "a^b",
        "a|b",
        "a~b",
        "a`b",
        "a$b",
        "a&b",
        "a,b",
        "a;b",
        "a:b",
        "bell\x07",
        "del\x7f",
        "c1\x85",
    ],
)
def test_invalid_execution_names_are_refused(name):
    with pytest.raises(InvalidExecutionName, match="execution name"):
        check_execution_name(name)
    with pytest.raises(InvalidExecutionName):
        execute(PASS_SELF, {}, name=name)


def test_valid_execution_names():
    for name in ("run-1", "x" * 80, "Run_2.final", "é-ü", "a'b", "a@b+c=d!"):
        assert check_execution_name(name) == name
    assert name_for("event-", "6a7e8feb-1") == "event-6a7e8feb-1"
    hashed = name_for("event-", "../../" + "x" * 200)
    assert check_execution_name(hashed) == hashed and hashed == name_for(
        "event-", "../../" + "x" * 200
    )


def test_a_bus_rule_names_executions_validly_whatever_the_event_id(tmp_path):
    from headrace import App
    from headrace.events.envelope import make_envelope
    from headrace.server.metrics import Metrics
    from headrace.server.streams import StreamService
    from headrace.storage import ObjectStore

    app = App()
    app.state_machine("flag", {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    app.rule({"detail-type": ["Alarm"]}, target="states:flag")
    settings = load_settings(tmp_path, home=str(tmp_path / "home"))
    ledger = Ledger(settings.ledger_url)
    service = StreamService(
        settings, app, ledger, ObjectStore(settings.storage_url), Metrics().streams, print
    )
    alarm = make_envelope(source="chain", detail_type="Alarm", detail={}, id="../../a b:c")
    service.publish([alarm])
    service.publish([alarm])  # a redelivery starts no second execution
    with ledger.reader.connect() as conn:
        (execution,) = store.list_executions(conn)
    assert execution["name"] == name_for("event-", "../../a b:c")
    assert check_execution_name(execution["name"]).startswith("event-")
    ledger.close()


# -- under the coordinator ----------------------------------------------------------------------


class Running:
    def __init__(self, tmp_path: Path, ledger_url: str | None = None):
        self.settings = load_settings(
            APP_DIR, home=str(tmp_path / "home"), ledger=ledger_url, poll_interval=0.1, workers=2
        )
        self.app = load_app(self.settings)
        self.coordinator = Coordinator(self.settings, self.app)
        self.thread = threading.Thread(target=self.coordinator.run, kwargs={"drain_timeout": 5})
        self.thread.start()
        assert self.coordinator.ready.wait(30)
        self.ledger = Ledger(self.settings.ledger_url)
        self.buckets = Path(self.settings.storage_url)

    def stop(self):
        self.coordinator.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.ledger.close()

    def convert_within(self, key: str, seconds: float) -> float:
        """Put an object into the trigger's bucket; how long until its output exists."""
        started = time.monotonic()
        (self.buckets / "inbox" / key).write_bytes(key.encode())
        out = self.buckets / "outbox" / key
        while not out.exists():
            elapsed = time.monotonic() - started
            assert elapsed < seconds, f"{key} not converted within {seconds} s"
            time.sleep(0.01)
        assert out.read_bytes() == key.upper().encode()
        return time.monotonic() - started


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def running(request, tmp_path):
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    r = Running(tmp_path, url)
    (r.buckets / "inbox").mkdir(parents=True, exist_ok=True)
    r.convert_within("warm-up.txt", 30.0)  # the first object starts a worker
    yield r
    r.stop()


@pytest.mark.slow
def test_looping_machines_beside_a_file_trigger(running):
    # each step carries a few KB, as real inputs do: 25,000 events take seconds to write
    data = {"go": True, "pad": "x" * 4000}
    loops = [
        api.start_execution(running.ledger, running.app, name, data)
        for name in ("pass_self", "ping_pong", "choice_self")
    ]

    def looping() -> bool:
        return any(api.describe_execution(running.ledger, a)["status"] == "RUNNING" for a in loops)

    served_while_looping = []
    peak_memory = 0
    i = 0
    while looping():
        # a generous limit (a hang, not a speed): on a loaded machine one object took over 1 s
        running.convert_within(f"f{i}.txt", 30.0)
        served_while_looping.append(looping())
        i += 1
        # other executions are served too: a task-driven one ends while the loops run
        if i == 1:
            other = api.start_execution(running.ledger, running.app, "doubling", {"value": 3})
            assert api.wait_for(running.ledger, other, timeout=10)["status"] == "SUCCEEDED"
        # what the coordinator keeps in memory does not grow with the history
        for interp in list(running.coordinator.workflows.active.values()):
            peak_memory = max(peak_memory, len(interp.history))
        assert i < 200, "the loops did not end"
    # the loops did not starve the trigger: objects were converted before the loops ended
    assert served_while_looping[0], "the first object waited for the loops to end"
    assert peak_memory <= SLICE_EVENTS
    for arn in loops:
        row = api.describe_execution(running.ledger, arn)
        assert (row["status"], row["error"], row["cause"]) == (
            "FAILED",
            "States.Runtime",
            QUOTA_CAUSE,
        )
        assert len(api.get_history(running.ledger, arn)) == 25_000
    with pytest.raises(api.ExecutionError, match="cannot be redriven"):
        api.redrive_execution(running.ledger, loops[0])
    assert running.coordinator.stats.last_error == ""


def test_stop_execution_while_a_machine_loops(running):
    data = {"pad": "x" * 4000}  # a few KB a step: seconds to the history quota
    arn = api.start_execution(running.ledger, running.app, "pass_self", data, name="spinning")
    time.sleep(0.5)
    assert api.describe_execution(running.ledger, arn)["status"] == "RUNNING"
    started = time.monotonic()
    row = api.stop_execution(running.ledger, "spinning", error="Cancelled", cause="by the test")
    assert row["status"] == "ABORTED" and time.monotonic() - started < 2.0
    time.sleep(0.5)
    history = api.get_history(running.ledger, arn)
    assert history[-1]["type"] == "ExecutionAborted"
    assert [e["id"] for e in history] == list(range(1, len(history) + 1))
    assert api.describe_execution(running.ledger, arn)["status"] == "ABORTED"
    assert arn not in running.coordinator.workflows.active
    running.convert_within("after-stop.txt", 1.0)
    assert running.coordinator.stats.last_error == ""


def test_a_failing_write_fails_its_execution_not_the_turn(running):
    arn = api.start_execution(
        running.ledger, running.app, "write_results", {"items": [1, 2], "prefix": "../../escape"}
    )
    row = api.wait_for(running.ledger, arn, timeout=10)
    assert row["status"] == "FAILED" and row["error"] == "States.ResultWriterFailed", row
    running.convert_within("after-write.txt", 1.0)
    assert running.coordinator.stats.last_error == ""


def test_a_function_name_selected_at_run_time_that_is_no_string(running):
    arn = api.start_execution(running.ledger, running.app, "dynamic_function", {"fn": {"a": 1}})
    row = api.wait_for(running.ledger, arn, timeout=10)
    assert row["status"] == "FAILED" and row["error"] == "States.Runtime", row
    assert row["cause"].endswith("names no registered function (FunctionName is {'a': 1})")
    ok = api.start_execution(running.ledger, running.app, "dynamic_function", {"fn": "double"})
    assert api.wait_for(running.ledger, ok, timeout=10)["output"]["Payload"] == {"value": 2}
    running.convert_within("after-function-name.txt", 1.0)
    assert running.coordinator.stats.last_error == ""


def test_a_history_the_interpreter_cannot_read_fails_that_execution_only(tmp_path):
    settings = load_settings(APP_DIR, home=str(tmp_path / "home"), poll_interval=0.1, workers=2)
    app = load_app(settings)
    ledger = Ledger(settings.ledger_url)
    arn = api.start_execution(ledger, app, "doubling", {"value": 3}, name="from-the-future")
    with ledger.begin() as conn:  # as a newer headrace might have written it
        store.append_next(conn, arn, "ExecutionTeleported", {})
    ledger.close()
    r = Running(tmp_path)
    try:
        row = api.wait_for(r.ledger, arn, timeout=10)
        assert row["status"] == "FAILED" and row["error"] == "States.Runtime", row
        assert "'ExecutionTeleported'" in row["cause"]
        assert api.get_history(r.ledger, arn)[-1]["type"] == "ExecutionFailed"
        other = api.start_execution(r.ledger, r.app, "doubling", {"value": 3})
        assert api.wait_for(r.ledger, other, timeout=10)["status"] == "SUCCEEDED"
        (r.buckets / "inbox").mkdir(parents=True, exist_ok=True)
        r.convert_within("after-history.txt", 30.0)
        assert r.coordinator.stats.last_error == ""
    finally:
        r.stop()


def test_invalid_names_are_refused_by_the_api_and_the_cli(tmp_path):
    settings = load_settings(APP_DIR, home=str(tmp_path / "home"))
    ledger = Ledger(settings.ledger_url)
    try:
        for name in ("../../x", "a/b", "x" * 300):
            with pytest.raises(InvalidExecutionName):
                api.start_execution(ledger, load_app(settings), "doubling", {"value": 1}, name=name)
    finally:
        ledger.close()
    env = {"HEADRACE_HOME": str(tmp_path / "home")}
    done = e2e_helpers.headrace(
        "start-execution", "doubling", "--name", "a/b", project=APP_DIR, env=env
    )
    assert done.returncode != 0
    assert "execution name 'a/b': contains '/' at position 1 (fix:" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_stop_execution_command_and_sigterm_while_machines_loop(tmp_path):
    home = tmp_path / "home"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.1"}
    settings = load_settings(APP_DIR, home=str(home))
    ledger = Ledger(settings.ledger_url)
    up = e2e_helpers.Up(APP_DIR, env, tmp_path / "up.log").start()
    try:
        # a few KB a step: the loops would take seconds to reach the history quota
        data = {"pad": "x" * 4000}

        def length(arn: str) -> int:
            # a count, not get_history: decoding thousands of padded events took long enough
            # under load for the loop to run to its quota between this poll and the SIGTERM
            execution_id = api.describe_execution(ledger, arn)["id"]
            with ledger.reader.connect() as conn:
                return store.history_length(conn, execution_id)

        def started_looping(machine: str, name: str, events: int) -> str:
            arn = api.start_execution(ledger, load_app(settings), machine, data, name=name)
            deadline = time.time() + 10
            while length(arn) < events:
                assert time.time() < deadline, up.output()
                time.sleep(0.01)
            return arn

        started_looping("pass_self", "to-stop", 200)
        stopped = e2e_helpers.headrace(
            "stop-execution", "to-stop", project=APP_DIR, env=env, timeout=10
        )
        assert stopped.returncode == 0 and "to-stop: ABORTED" in stopped.stdout, stopped
        # terminate early in the loop: on a quiet machine it reaches the 25,000-event quota in
        # about two seconds
        arn = started_looping("ping_pong", "to-terminate", 100)
        at_sigterm = length(arn)
        assert up.terminate(timeout=10) == 0, up.output()
        # it stopped between two slices of the loop, not after it: the loop resumes next start
        assert api.describe_execution(ledger, arn)["status"] == "RUNNING", (at_sigterm, up.output())
        assert length(arn) < 20_000
        up.start()  # and runs on to the quota, where it ends (a restart no longer hangs)
        row = api.wait_for(ledger, arn, timeout=60)
        assert (row["status"], row["cause"]) == ("FAILED", QUOTA_CAUSE), up.output()
        history = api.get_history(ledger, arn)
        assert len(history) == 25_000 and [e["id"] for e in history] == list(range(1, 25_001))
        assert up.terminate(timeout=10) == 0, up.output()
    finally:
        if up.alive():
            up.kill9()
        ledger.close()
