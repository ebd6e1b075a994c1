"""The console's JSON API against a running coordinator with real invocations, executions and
stream records (docs/console.md documents each answer checked here)."""

from __future__ import annotations

import pytest

from tests.console_helpers import ROOT, ConsoleProject, populate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    p = ConsoleProject(tmp_path_factory.mktemp("console-api"))
    try:
        p.made = populate(p)
        yield p
    finally:
        p.close()


def test_the_console_and_its_assets_are_served_beside_the_metrics(project):
    page = project.get("/")
    assert page.status_code == 200 and "<main" in page.text
    assert "/static/app.js" in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        res = project.get(f"/static/{name}")
        assert res.status_code == 200 and res.headers["content-type"].startswith(kind)
        assert "default-src 'self'" in res.headers["content-security-policy"]
    assert "http" not in project.get("/").text.replace("http-equiv", "")  # no CDN
    assert project.get("/static/../api.py").status_code == 404
    assert "headrace_invocations_total" in project.get("/metrics").text


def test_overview_shows_coordinator_settings_triggers_sources_pipelines_errors(project):
    d = project.get("/api/overview").json()
    assert [c["me"] for c in d["coordinators"]] == [True]
    settings = {s["name"]: s for s in d["settings"]}
    assert settings["app"]["origin"].endswith("headrace.toml")
    assert settings["executor"]["origin"] == "default"
    assert settings["poll_interval"]["origin"] == "arguments"
    assert settings["storage"]["env"] == "HEADRACE_STORAGE"
    (inbox,) = [b for b in d["buckets"] if b["name"] == "inbox"]
    assert [t["target"] for t in inbox["triggers"]] == ["function:ingest"]
    assert [s["name"] for s in d["sources"]] == ["blockchain"]
    assert d["sources"][0]["health"]["status"] == "ok"
    (tx,) = [x for x in d["pipelines"] if x["name"] == "tx"]
    assert tx["name"] == "tx" and tx["state"] == "running" and tx["records"] > 0
    assert any(e["function"] == "reject" and "refused" in e["error"] for e in d["errors"])
    assert d["invocation_counts"]["ingest"]["succeeded"] >= 3
    # the card counts what the dead-letter list lists: the failing execution's dead task
    # invocation is handled by its execution, not parked as a dead letter
    listed = project.get("/api/dead-letters").json()["items"]
    assert d["dead_letters"] == len(listed) >= 1
    assert d["invocation_counts"]["reject"]["dead"] > d["dead_letters"]


def test_invocations_filter_page_and_show_trigger_attempts_and_logs(project):
    page = project.get("/api/invocations?function=ingest&limit=2").json()
    assert len(page["items"]) == 2 and page["next"]
    rest = project.get(f"/api/invocations?function=ingest&limit=2&cursor={page['next']}").json()
    seen = {r["id"] for r in page["items"]}
    assert rest["items"] and not seen & {r["id"] for r in rest["items"]}
    assert all(r["function"] == "ingest" for r in page["items"] + rest["items"])
    assert {r["trigger"] for r in page["items"] + rest["items"]} == {
        f"inbox/in/file-{i}.txt" for i in range(3)
    }
    dead = project.get("/api/invocations?status=dead").json()["items"]
    assert project.made["dead"] in {r["id"] for r in dead}
    assert project.get("/api/invocations?since=9999999999").json()["items"] == []
    one = project.get(f"/api/invocations/{page['items'][0]['id']}").json()
    assert one["event"]["subject"].startswith("inbox/in/file-")
    assert one["attempts"][0]["status"] == "ok"
    assert "ingesting in/file-" in one["attempts"][0]["log"]
    failed = project.get(f"/api/invocations/{project.made['dead']}").json()
    assert [a["status"] for a in failed["attempts"]] == ["error", "error"]
    assert "refused the test says so" in failed["attempts"][-1]["error"]
    assert "about to refuse" in failed["attempts"][-1]["log"]
    assert project.get("/api/invocations/nosuch").status_code == 404
    bad = project.get("/api/invocations?since=yesterday")
    assert bad.status_code == 400 and "'since'" in bad.json()["error"]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/invocations?limit=nan", "limit"),
        ("/api/invocations?limit=inf", "limit"),
        ("/api/invocations?limit=1e400", "limit"),
        ("/api/invocations?limit=0", "limit"),
        ("/api/invocations?limit=501", "limit"),
        ("/api/invocations?limit=2.5", "limit"),
        ("/api/invocations?since=nan", "since"),
        ("/api/invocations?until=-1e300", "until"),
        ("/api/invocations?status=bogus", "status"),
        ("/api/executions?status=bogus", "status"),
        ("/api/executions?cursor=nan:x", "cursor"),
        ("/api/dead-letters?cursor=nan", "cursor"),
        ("/api/dead-letters?cursor=1e30", "cursor"),
        ("/api/streams?minutes=nan", "minutes"),
        ("/api/streams?minutes=1e300", "minutes"),
        ("/api/streams?minutes=-1e20", "minutes"),
        ("/api/executions/fan-done/history?after=-99999999999999999999", "after"),
        ("/api/executions/fan-done/history?after=99999999999999999999", "after"),
        ("/api/jobs?limit=inf", "limit"),
    ],
)
def test_a_bad_number_or_status_is_a_400_naming_the_parameter(project, path, name):
    res = project.get(path)
    assert res.status_code == 400, res.text
    assert f"'{name}'" in res.json()["error"] or f"{name} " in res.json()["error"]


def test_the_error_names_the_allowed_values_and_range(project):
    status = project.get("/api/invocations?status=bogus").json()["error"]
    assert "pending, running, succeeded, dead" in status
    assert "ABORTED" in project.get("/api/executions?status=bogus").json()["error"]
    assert "between 1 and 500" in project.get("/api/invocations?limit=501").json()["error"]
    assert project.get("/api/invocations?limit=500").status_code == 200


def test_a_negative_content_length_is_a_400(project):
    import socket

    host, port = project.url.removeprefix("http://").rsplit(":", 1)
    request = (
        "POST /api/dead-letters/redrive HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nX-Headrace: 1\r\nContent-Length: -5\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    assert b"Content-Length" in answer.split(b"\r\n\r\n", 1)[1]


def test_dead_letters_are_listed_and_redriven(project):
    listed = project.get("/api/dead-letters?function=reject").json()["items"]
    assert project.made["dead"] in [r["invocation_id"] for r in listed]
    refused = project.post("/api/dead-letters/redrive", {"ids": ["bogus"]})
    assert refused.status_code == 404 and "bogus" in refused.json()["error"]
    no_header = project.post(
        "/api/dead-letters/redrive", {"ids": [project.made["dead"]]}, headers={"X-Headrace": "0"}
    )
    assert no_header.status_code == 403
    out = project.post("/api/dead-letters/redrive", {"ids": [project.made["dead"], "bogus"]}).json()
    assert out == {"redriven": [project.made["dead"]], "not_found": ["bogus"]}
    project.wait_until(
        lambda: (
            project.ledger.get_invocation(project.made["dead"])["status"] == "dead"
            and project.ledger.get_invocation(project.made["dead"])["source"] == "redrive"
        ),
        what="the redriven invocation to fail again",
    )


def test_executions_list_search_and_counts(project):
    page = project.get("/api/executions?counts=1").json()
    names = {r["name"] for r in page["items"]}
    assert {"fan-done", "fan-running", "fails"} <= names
    assert page["counts"]["fanout"]["SUCCEEDED"] >= 1
    found = project.get("/api/executions?q=fan-&status=RUNNING").json()["items"]
    assert [r["name"] for r in found] == ["fan-running"]
    assert project.get("/api/executions?q=%25").json()["items"] == []  # % is no wildcard


def test_execution_graph_counts_map_items_and_shows_caught_errors(project):
    d = project.get(f"/api/executions/{project.made['done']}").json()
    assert d["execution"]["status"] == "SUCCEEDED" and d["execution"]["history_length"] > 20
    nodes = {}

    def walk(cluster):
        for n in cluster["nodes"]:
            nodes[n["path"]] = n
        for c in cluster["clusters"]:
            walk(c)

    walk(d["graph"]["root"])
    assert nodes["Squares"]["items"] == {"succeeded": 10} and nodes["Squares"]["total"] == 10
    # items 4 and 9 raise ArithmeticError, caught into Unlucky
    assert nodes["Squares[*]/Square"]["items"] == {"succeeded": 8, "caught": 2}
    assert nodes["Squares[*]/Square"]["status"] == "caught"
    assert nodes["Squares[*]/Unlucky"]["items"] == {"succeeded": 2}
    assert nodes["Both{0}/Quick"]["status"] == "succeeded"
    assert nodes["Done"]["status"] == "succeeded"
    assert any(
        e["style"] == "dashed" and e["label"] == "ArithmeticError" for e in d["graph"]["edges"]
    )
    io = project.get(
        f"/api/executions/{project.made['done']}/state?path=Squares[*]/Square&index=3"
    ).json()
    assert (
        io["runs"] == 1
        and io["last"]["input"] == {"n": 3}
        and io["last"]["output"] == {"n": 3, "square": 9}
    )
    top = project.get(f"/api/executions/{project.made['done']}/state?path=Squares").json()
    assert top["last"]["input"]["items"] == list(range(10))


def test_a_long_history_is_drawn_at_once_and_painted_when_folded(project, monkeypatch):
    from headrace.console import api

    monkeypatch.setattr(api, "FOLD_INLINE", 5)
    arn = project.made["failed"]
    project.coordinator.console.api.folds._cache.clear()
    first = project.get(f"/api/executions/{arn}").json()
    assert first["painting"] is True
    assert all("status" not in n for n in first["graph"]["root"]["nodes"])
    painted = project.wait_until(
        lambda: (d := project.get(f"/api/executions/{arn}").json())["painting"] is False and d,
        what="the fold",
    )
    (reject,) = [n for n in painted["graph"]["root"]["nodes"] if n["path"] == "Reject"]
    assert reject["status"] == "failed"
    assert painted["folded"] == painted["execution"]["history_length"]


def test_a_long_history_is_painted_as_far_as_the_background_fold_got(project, monkeypatch):
    from headrace.console import api

    folds = project.coordinator.console.api.folds
    monkeypatch.setattr(api, "FOLD_INLINE", 5)
    monkeypatch.setattr(api, "FOLD_CHUNK", 3)
    arn = project.made["done"]  # its ARN: what the folds are keyed by
    with folds._lock:
        folds._cache.clear()
        folds._warming.add(arn)  # as if a background fold were going: no other one starts
    try:
        d = project.get(f"/api/executions/{arn}").json()
        assert d["painting"] is True and d["folded"] == 0  # nothing folded yet: unpainted
        folds._fold(project.ledger, arn, d["definition"], 3)  # the first chunk, as it feeds it
        assert folds.progress(arn)[0] == 3
        d = project.get(f"/api/executions/{arn}").json()
        assert d["painting"] is True and d["folded"] == 3
        (squares,) = [n for n in d["graph"]["root"]["nodes"] if n["path"] == "Squares"]
        assert squares["status"] == "running"  # as of event 3: the Map had started
    finally:
        with folds._lock:
            folds._warming.discard(arn)
            folds._painted.pop(arn, None)


def test_history_is_paged(project):
    arn = project.made["done"]
    first = project.get(f"/api/executions/{arn}/history?limit=5").json()
    assert [e["id"] for e in first["items"]] == [1, 2, 3, 4, 5] and first["next"] == 5
    assert first["items"][0]["type"] == "ExecutionStarted"
    more = project.get(f"/api/executions/{arn}/history?after=5&limit=5").json()
    assert more["items"][0]["id"] == 6


def test_stop_and_redrive_from_the_console(project):
    arn = project.made["running"]
    assert project.post(f"/api/executions/{arn}/redrive").status_code == 409
    stopped = project.post(f"/api/executions/{arn}/stop").json()
    assert stopped["execution"]["status"] == "ABORTED"
    again = project.post(f"/api/executions/{arn}/stop")
    assert again.status_code == 409 and "not running" in again.json()["error"]
    redriven = project.post(f"/api/executions/{project.made['failed']}/redrive").json()
    assert redriven["execution"]["status"] == "RUNNING"
    project.wait_until(
        lambda: project.status(project.made["failed"]) == "FAILED", what="the redrive to fail"
    )
    assert project.get("/api/executions/nosuch").status_code == 404


def test_streams_report_per_stage_minutes_lag_watermark_and_health(project):
    d = project.get("/api/streams").json()
    stages = {r["stage"] for r in d["stats"] if r["pipeline"] == "tx"}
    assert len(stages) >= 2
    assert sum(r["records_in"] for r in d["stats"]) > 0
    (cp,) = [c for c in d["checkpoints"] if c["pipeline"] == "tx"]
    assert cp["pipeline"] == "tx" and cp["records"] > 0
    assert {h["component"] for h in d["health"]} >= {"source:blockchain"}


def test_late_records_are_counted_per_window(project):
    from tests.console_helpers import SENSOR_MINUTE

    d = project.get("/api/streams").json()
    mine = [w for w in d["late_windows"] if w["pipeline"] == "sensors"]
    by_window = {(w["window_start"], w["window_end"]): w["records"] for w in mine}
    assert by_window == {
        (SENSOR_MINUTE, SENSOR_MINUTE + 60): 2,
        (SENSOR_MINUTE + 60, SENSOR_MINUTE + 120): 1,
    }
    assert {w["stage"] for w in mine} == {"tumbling"}
    assert {w["reason"] for w in mine} == {"window_closed"}
    # the late stream holds the same records, each naming the window it missed
    late = project.get("/api/streams/sensors-late/records").json()
    assert len(late["items"]) == 3


def test_serving_shows_routes_replicas_and_latency(project):
    d = project.get("/api/serving").json()
    assert d["serving"] is True and d["url"] == project.coordinator.serve_url
    (route,) = d["routes"]
    assert route["key"] == "GET /hello" and route["function"] == "hello"
    assert route["requests"].get("200", 0) >= 5 and route["errors"] == 0
    latency = route["latency"]
    assert latency["count"] >= 5 and latency["mean_ms"] > 0
    assert latency["p50_ms_at_most"] <= latency["p95_ms_at_most"]
    assert d["replicas"] and all(r["pid"] > 0 and r["state"] == "ready" for r in d["replicas"])
    assert d["model"] is None  # the route binds no model


def test_models_list_versions_and_alias_moves(project):
    (m,) = [x for x in project.get("/api/models").json()["items"] if x["name"] == "digits"]
    assert m["versions"] == 2 and m["latest"] == 2 and m["aliases"] == {"prod": 2}
    d = project.get("/api/models/digits").json()
    assert [v["version"] for v in d["versions"]] == [2, 1]  # newest first
    assert d["versions"][0]["aliases"] == ["prod"]
    assert d["versions"][0]["metrics"] == {"accuracy": 0.95}
    (move,) = d["alias_moves"]
    assert (move["alias"], move["version"], move["previous"]) == ("prod", 2, None)
    assert project.get("/api/models/nosuch").status_code == 404


def test_stream_records_are_browsed_newest_first(project):
    d = project.get("/api/streams").json()
    assert d["late_streams"] == ["sensors-late", "tx-late"] and "transactions" in d["streams"]
    page = project.get("/api/streams/transactions/records?limit=5").json()
    assert len(page["items"]) == 5 and page["offset"] == page["end"] - 5
    assert all(r["hash"] for r in page["items"])
    first = project.get("/api/streams/transactions/records?limit=2&offset=0").json()
    assert first["offset"] == first["start"] and len(first["items"]) == 2
    late = project.get("/api/streams/tx-late/records").json()
    assert late["end"] - late["start"] == len(late["items"]) or len(late["items"]) == 50
    assert project.get("/api/streams/nosuch/records").status_code == 404
    assert project.get("/api/streams/transactions/records?partition=7").status_code == 400


def test_live_stream_sends_changes(project):
    import httpx

    with httpx.stream("GET", project.url + "/api/live", timeout=10) as res:
        assert res.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in res.iter_lines():
            lines.append(line)
            if line.startswith("data:"):
                break
    assert "event: change" in lines and '"attempts"' in lines[-1]


def test_item_tables_are_listed_and_filtered(project):
    from headrace.tables import Tables

    tables = Tables(project.ledger)
    tables.create_table("tasks", key_schema=[{"AttributeName": "id", "KeyType": "HASH"}])
    for i in range(5):
        tables.put_item("tasks", {"id": f"t{i}", "state": "done" if i % 2 else "todo"})
    listed = project.get("/api/tables").json()["items"]
    assert "tasks" in [t["name"] for t in listed]
    page = project.get("/api/tables/tasks?limit=2").json()
    assert [i["id"] for i in page["items"]] == ["t0", "t1"] and page["next"] == {"id": "t1"}
    done = project.get(
        "/api/tables/tasks",
        params={"filter": "#s = :s", "names": '{"#s": "state"}', "values": '{":s": "done"}'},
    ).json()
    assert [i["id"] for i in done["items"]] == ["t1", "t3"]
    bad = project.get("/api/tables/tasks", params={"filter": "state = :missing"})
    assert bad.status_code == 400 and ":missing" in bad.json()["error"]


def test_feature_group_schema_counts_freshness_and_online_lookup(project):
    project.wait_until(
        lambda: project.get("/api/features/tx_minute").json()["counts"]["offline_rows"] > 0,
        timeout=150,
        what="a closed minute in the feature group",
    )
    d = project.get("/api/features/tx_minute").json()
    assert {c["name"] for c in d["schema"]} >= {"network", "window_end", "tx_count", "avg_fee"}
    assert d["freshness"] and d["history"]
    found = project.get("/api/features/tx_minute/online?network=bitcoin").json()
    assert found["row"]["tx_count"] > 0
    assert project.get("/api/features/tx_minute/online?network=nosuch").json()["row"] is None
    assert project.get("/api/features/tx_minute/online").status_code == 400


def test_buckets_list_and_download(project):
    assert "inbox" in project.get("/api/buckets").json()["items"]
    listed = project.get("/api/buckets/inbox?prefix=in/").json()["items"]
    assert [o["key"] for o in listed] == [f"in/file-{i}.txt" for i in range(3)]
    got = project.get("/api/buckets/inbox/object?key=in/file-1.txt")
    assert got.content == b"data 1"
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"file-1.txt\"; filename*=UTF-8''file-1.txt"
    )
    # a name beyond Latin-1 (WSGI headers are Latin-1) travels percent-encoded
    project.put('dl/日本 "q".txt', b"nihon")
    got = project.get("/api/buckets/inbox/object", params={"key": 'dl/日本 "q".txt'})
    assert got.status_code == 200 and got.content == b"nihon"
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"__ _q_.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%20%22q%22.txt"
    )
    assert project.get("/api/buckets/inbox/object?key=in/nosuch").status_code == 404
    assert project.get("/api/buckets/nosuch").status_code == 404


def test_jobs_with_their_logs(project):
    from headrace.jobs.definition import JobDefinition
    from headrace.jobs.service import Jobs

    jobs = Jobs(project.ledger, project.settings.home)
    definition = JobDefinition(name="hello", command=["python", "-c", "print('hello from a job')"])
    run = jobs.run_sync(definition, job_name="hello-1")
    listed = project.get("/api/jobs").json()["items"]
    assert run.id in [j["id"] for j in listed]
    one = project.get(f"/api/jobs/{run.id}").json()
    assert one["job"]["status"] == "SUCCEEDED" and "hello from a job" in one["log"]
    assert project.get("/api/jobs/nosuch").status_code == 404


def test_the_function_filter_lists_built_in_functions_only_once_they_ran(project):
    names = [f["name"] for f in project.get("/api/functions").json()["items"]]
    ran = {r["function"] for r in project.ledger.list_invocations(limit=10_000)}
    built_in = {n for n in project.app.functions if n.startswith("_")}
    assert built_in - ran  # the app has built-in functions that never ran ...
    assert not (built_in - ran) & set(names)  # ... and the filter does not offer them
    assert {"ingest", "reject"} <= set(names)
    assert {n for n in names if n.startswith("_")} <= ran


def test_dataset_runs_of_the_projects_scripts_and_jobs(project):
    items = project.get("/api/datasets").json()["items"]
    assert len(items) == 3
    by_job = [r for r in items if r["job_id"] == project.made["dataset_job"]]
    assert len(by_job) == 1 and by_job[0]["status"] == "SUCCEEDED"
    for run in items:
        assert run["name"] == "double_numbers.py" and run["engine"] == "local"
        assert run["steps"] == ["ReadParquet", "MapBatches(double)", "WriteParquet"]
        assert run["action"] == "write_parquet" and run["tasks_total"] == 8
        assert "stages" not in run  # the list leaves them to the run's own page
    ok = [r for r in items if r["status"] == "SUCCEEDED"]
    assert len(ok) == 2 and all(r["rows_out"] == 800 and r["tasks_done"] == 8 for r in ok)
    assert ok[-1]["output"].endswith("doubled")
    (failed,) = project.get("/api/datasets?status=FAILED").json()["items"]
    assert "ValueError: the test says so" in failed["error"] and failed["rows_out"] == 0
    # an error of the last hour on the overview
    (error,) = project.get("/api/overview").json()["dataset_errors"]
    assert error["id"] == failed["id"] and error["error"] == failed["error"]
    # paged newest first, like the other lists
    first = project.get("/api/datasets?limit=2").json()
    rest = project.get(f"/api/datasets?limit=2&cursor={first['next']}").json()
    assert [r["id"] for r in first["items"] + rest["items"]] == [r["id"] for r in items]
    assert rest["next"] is None
    assert project.get("/api/datasets?q=double_").json()["items"] == items
    assert project.get(f"/api/datasets?q={project.made['dataset_job']}").json()["items"] == by_job
    assert project.get("/api/datasets?q=nosuch").json()["items"] == []
    one = project.get(f"/api/datasets/{ok[0]['id'][:8]}").json()["run"]
    assert one["id"] == ok[0]["id"]
    (stage,) = one["stages"]
    assert stage["name"] == "ReadParquet->MapBatches(double)->WriteParquet"
    assert (stage["tasks"], stage["total"]) == (8, 8)
    assert project.get("/api/datasets/nosuch").status_code == 404
    assert project.get("/api/datasets?status=nope").status_code == 400


def test_a_running_dataset_shows_its_progress(project):
    from tests.console_helpers import run_dataset_script

    before = {r["id"] for r in project.get("/api/datasets?limit=500").json()["items"]}
    slow = run_dataset_script(project, "slow", "slowly", wait=False)
    try:

        def running():
            items = project.get("/api/datasets?status=RUNNING").json()["items"]
            return [r for r in items if r["id"] not in before and 0 < r["tasks_done"] < 8]

        (run,) = project.wait_until(running, what="a dataset run part way")
        assert run["tasks_total"] == 8 and run["finished_at"] is None
        assert slow.wait(60) == 0
        one = project.get(f"/api/datasets/{run['id']}").json()["run"]
        assert one["status"] == "SUCCEEDED" and one["tasks_done"] == 8
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()


def test_the_live_stream_sees_a_dataset_run_change(project):
    from tests.console_helpers import run_dataset_script

    console = project.coordinator.console
    before = console._version()["datasets"]
    done = run_dataset_script(project, "ok", "again")
    assert done.returncode == 0, done.stderr
    assert console._version()["datasets"] > before


def test_every_api_route_is_documented_and_the_documented_curl_works(project):
    import re
    import subprocess

    text = (ROOT / "docs" / "console.md").read_text()
    documented = set()
    for heading in re.findall(r"^### (.+)$", text, flags=re.M):
        for method, path in re.findall(r"`(GET|POST) (/api/[^`?]*)", heading):
            documented.add((method, re.sub(r"\{[^}]+\}", "{}", path)))
        for path in re.findall(r"and `…/(\w+)`", heading):  # "…/redrive" beside "…/stop"
            documented.add(("POST", "/api/executions/{}/" + path))
    routes = {
        (method, re.sub(r"\(\?P<\w+>[^)]*\)", "{}", regex.pattern.strip("^$")))
        for method, regex, _ in project.coordinator.console.api.router._routes
    }
    assert routes | {("GET", "/api/live")} == documented  # the event stream is no route
    (block,) = re.findall(r"```bash\n(.+?)```", text, flags=re.S)
    command = block.strip().replace("http://127.0.0.1:9464", project.url)
    out = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
    assert project.made["dead"] in out.stdout
