"""The console in a real browser (Playwright driving Debian's Chromium) against a running
coordinator with real invocations, executions, stream records and features. Screenshots of
every page, light and dark, are kept in test-artifacts/console/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.console_helpers import ROOT, ConsoleProject, populate

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "console"

if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    p = ConsoleProject(tmp_path_factory.mktemp("console-browser"))
    try:
        p.made = populate(p)
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        # no browser download: Debian's Chromium; root needs --no-sandbox
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(params=["light", "dark"])
def page(request, browser):
    context = browser.new_context(
        color_scheme=request.param, viewport={"width": 1400, "height": 1000}
    )
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.scheme = request.param
    yield pg
    context.close()
    assert not errors, errors


def ready(pg, hash_: str) -> None:
    pg.wait_for_selector(f"body[data-ready='{hash_}']", state="attached", timeout=15_000)


def shot(pg, name: str) -> None:
    pg.screenshot(path=str(ARTIFACTS / f"{name}-{pg.scheme}.png"), full_page=True)


def test_overview(project, page):
    page.goto(project.url + "/")
    ready(page, "#/overview")
    assert page.locator("h1").inner_text().startswith("Overview")
    main = page.locator("main")
    assert "function:ingest" in main.inner_text()  # the inbox trigger
    assert "blockchain" in main.inner_text() and "tx" in main.inner_text()
    assert "refused" in page.locator("#errors + table").inner_text()
    failed_runs = page.locator("table:has(caption:has-text('failed dataset runs'))")
    assert "double_numbers.py · write_parquet" in failed_runs.inner_text()
    assert "ValueError: the test says so" in failed_runs.inner_text()
    dead = len(project.get("/api/dead-letters").json()["items"])
    card = page.locator(".card", has_text="dead letters").locator(".n")
    assert card.inner_text() == str(dead)  # the list's count, not every dead invocation
    settings = page.locator("#settings + table").inner_text()
    assert "HEADRACE_EXECUTOR" in settings and "headrace.toml" in settings
    page.wait_for_selector("#live:has-text('live')")
    # dark or light: the page background follows the system's choice
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == ("rgb(13, 17, 23)" if page.scheme == "dark" else "rgb(255, 255, 255)")
    shot(page, "overview")


def _after_a_live_change(project, page, selector: str) -> None:
    """Make something happen in the project and wait until the page has redrawn `selector`."""
    page.eval_on_selector(selector, "el => el.setAttribute('data-stale', '')")
    project.put(f"in/file-live-{time.time_ns()}.txt", b"a change")
    page.wait_for_selector(f"{selector}:not([data-stale])", state="attached")


def test_a_live_change_keeps_the_ticked_dead_letter_and_the_focused_state(project, page):
    if page.scheme == "dark":
        pytest.skip("one run is enough")
    page.goto(project.url + "/#/invocations?function=reject")
    ready(page, "#/invocations")
    box = page.locator("#dead-letters + table tbody tr input[type=checkbox]").first
    box.check()
    _after_a_live_change(project, page, "#dead-letters + table")
    assert page.locator("#dead-letters + table tbody tr input[type=checkbox]").first.is_checked()

    page.goto(project.url + f"/#/executions/{project.made['done']}")
    page.wait_for_selector(".graph svg .node")
    page.locator(".node[data-path='Squares']").focus()
    _after_a_live_change(project, page, ".graph svg")
    assert page.evaluate("document.activeElement.dataset.path") == "Squares"
    page.keyboard.press("Enter")
    page.wait_for_selector("#state-panel h2:has-text('Input')")


def test_invocations_filter_detail_logs_and_redrive(project, page):
    page.goto(project.url + "/#/invocations")
    ready(page, "#/invocations")
    page.select_option("#f-function", "ingest")
    page.wait_for_url("**function=ingest*")
    ready(page, "#/invocations")
    rows = page.locator("main table").first.locator("tbody tr")
    assert rows.count() >= 3
    assert all("ingest" in t for t in rows.all_inner_texts())
    shot(page, "invocations")
    rows.first.locator("a").first.click()
    page.wait_for_selector("#subject")
    assert page.locator("#subject").inner_text().startswith("inbox/in/file-")
    assert "ingesting in/file-" in page.locator("pre.log").last.inner_text()
    shot(page, "invocation")
    # the dead-letter list, redriven from the page (the light run; dark only looks)
    page.goto(project.url + "/#/invocations?function=reject")
    ready(page, "#/invocations")
    dead = page.locator("#dead-letters + table tbody tr")
    if page.scheme == "light":
        assert dead.count() >= 1
        dead.first.locator("input[type=checkbox]").check()
        page.click("#redrive")
        page.wait_for_selector("[role=status]:has-text('redriven: 1')")
        project.wait_until(
            lambda: project.ledger.get_invocation(project.made["dead"])["source"] == "redrive",
            what="the redrive",
        )
    shot(page, "dead-letters")


def test_executions_graph_state_io_and_history(project, page):
    page.goto(project.url + "/#/executions")
    ready(page, "#/executions")
    page.fill("#e-search", "fan-done")
    page.press("#e-search", "Enter")
    page.wait_for_url("**q=fan-done*")
    ready(page, "#/executions")
    shot(page, "executions")
    page.click("text=fan-done")
    page.wait_for_selector(".graph svg .node")
    square = page.locator(".node[data-path='Squares[*]/Square']")
    assert square.get_attribute("data-status") == "caught"
    assert "8 succeeded · 2 caught" in square.text_content()
    assert "10 succeeded" in page.locator(".node[data-path='Squares']").text_content()
    assert (
        page.locator(".node[data-path='Both{1}/Noop']").get_attribute("data-status") == "succeeded"
    )
    # keyboard: Tab onto a state, Enter shows its input and output
    page.locator(".node[data-path='Squares']").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#state-panel h2:has-text('Input')")
    assert '"items"' in page.locator("#state-panel").inner_text()
    square.click()
    page.wait_for_selector("#state-panel:has-text('ArithmeticError')")
    assert "caught" in page.locator("#state-panel").inner_text()
    page.fill("#map-item", "6")
    page.press("#map-item", "Enter")
    page.wait_for_selector("#state-runs:has-text('item 6')")
    assert '"square": 36' in page.locator("#state-panel").inner_text()
    assert "ExecutionStarted" in page.locator("#history + table").inner_text()
    shot(page, "execution")


def test_stop_and_redrive_buttons(project, page):
    if page.scheme == "dark":
        pytest.skip("the actions run once, in the light run")
    page.goto(project.url + f"/#/executions/{project.made['running']}")
    page.wait_for_selector(".graph svg .node")
    if project.status(project.made["running"]) == "RUNNING":
        page.click("#stop")
        page.wait_for_selector("h1 .badge:has-text('ABORTED')")
    assert project.status(project.made["running"]) == "ABORTED"
    assert page.locator(".node[data-path='Wait']").get_attribute("data-status") == "failed"
    shot(page, "execution-stopped")
    page.click("#redrive")
    page.wait_for_selector("h1 .badge:has-text('RUNNING')")
    project.wait_until(
        lambda: project.ledger.get_invocation(project.made["dead"]) is not None, what="redrive"
    )
    page.goto(project.url + f"/#/executions/{project.made['running']}")
    page.wait_for_selector(".graph svg .node")
    page.click("#stop")
    page.wait_for_selector("h1 .badge:has-text('ABORTED')")


def test_streams(project, page):
    page.goto(project.url + "/#/streams")
    ready(page, "#/streams")
    assert page.locator(".chart svg polyline").count() >= 4
    table = page.locator("main table").first.inner_text()
    assert "tx" in table
    assert "source:blockchain" in page.locator("main").inner_text()
    late = page.locator("#late-windows + table").inner_text()
    assert "sensors" in late and "window_closed" in late
    page.select_option("#s-stream", "transactions")
    page.wait_for_selector("#records table tbody tr >> nth=19")
    assert "hash" in page.locator("#records thead").inner_text()
    shot(page, "streams")


def test_tables_page_browses_and_filters(project, page):
    from headrace.tables import Tables

    tables = Tables(project.ledger)
    tables.create_table("steps", key_schema=[{"AttributeName": "id", "KeyType": "HASH"}])
    for i in range(4):
        tables.put_item("steps", {"id": f"s{i}", "state": "done" if i % 2 else "todo"})
    page.goto(project.url + "/#/tables")
    ready(page, "#/tables")
    page.click("text=steps")
    page.wait_for_selector("#t-filter")
    assert page.locator("main table tbody tr").count() == 4
    page.fill("#t-filter", "#s = :s".replace("#s", "attribute_exists(id) AND state"))
    page.fill("#t-values", '{":s": "done"}')
    page.press("#t-filter", "Enter")
    page.wait_for_url("**values=*")
    ready(page, "#/tables/steps")
    assert "s1" in page.locator("main table").inner_text()
    shot(page, "table")


def test_features_page_shows_schema_counts_and_looks_up_online(project, page):
    project.wait_until(
        lambda: project.get("/api/features/tx_minute").json()["counts"]["offline_rows"] > 0,
        timeout=150,
        what="a closed minute in the feature group",
    )
    page.goto(project.url + "/#/features")
    ready(page, "#/features")
    page.click("text=tx_minute")
    page.wait_for_selector("#offline-rows")
    assert int(page.locator("#offline-rows").inner_text()) > 0
    assert "avg_fee" in page.locator("main").inner_text()
    page.fill("#k-network", "bitcoin")
    page.press("#k-network", "Enter")
    page.wait_for_selector("#lookup-result pre")
    assert "tx_count" in page.locator("#lookup-result").inner_text()
    shot(page, "feature-group")


def test_jobs_page_shows_the_log(project, page):
    from headrace.jobs.definition import JobDefinition
    from headrace.jobs.service import Jobs

    jobs = Jobs(project.ledger, project.settings.home)
    name = f"greet-{page.scheme}"
    command = ["python", "-c", "print('job says hi')"]
    run = jobs.run_sync(JobDefinition(name="greet", command=command), job_name=name)
    page.goto(project.url + "/#/jobs")
    ready(page, "#/jobs")
    page.click(f"text={name}")
    page.wait_for_selector("#job-log")
    assert "job says hi" in page.locator("#job-log").inner_text()
    assert run.status == "SUCCEEDED"
    shot(page, "job")


def test_a_running_job_log_is_followed_live(project, page):
    if page.scheme == "dark":
        pytest.skip("one run is enough")
    import threading

    from headrace.jobs.definition import JobDefinition
    from headrace.jobs.service import Jobs

    jobs = Jobs(project.ledger, project.settings.home)
    script = "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second', flush=True)"
    job_id = jobs.submit(
        JobDefinition(name="slow", command=["python", "-c", script]), job_name="slow-job"
    )
    runner = threading.Thread(target=jobs.run, args=(job_id,))
    runner.start()
    try:
        project.wait_until(lambda: "first" in jobs.logs(job_id), what="the first line")
        page.goto(project.url + f"/#/jobs/{job_id}")
        page.wait_for_selector("#job-log:has-text('first')")
        assert "second" not in page.locator("#job-log").inner_text()
        page.wait_for_selector("#job-log:has-text('second')", timeout=20_000)
    finally:
        runner.join(60)


def test_datasets_page_lists_runs_and_follows_a_running_one_live(project, page):
    from tests.console_helpers import run_dataset_script

    page.goto(project.url + "/#/datasets")
    ready(page, "#/datasets")
    rows = page.locator("main table tbody tr")
    assert rows.count() >= 3
    text = page.locator("main table").inner_text()
    assert "double_numbers.py · write_parquet" in text
    assert "ReadParquet → MapBatches(double) → WriteParquet" in text
    assert "8 of 8 blocks · 800 rows" in text and "ValueError: the test says so" in text
    assert project.made["dataset_job"][:8] in text  # the run by a job links to it
    shot(page, "datasets")
    page.keyboard.press("/")  # the filter: type a script's name and Enter
    assert page.evaluate("document.activeElement.id") == "d-search"
    page.keyboard.type("double_")
    page.keyboard.press("Enter")
    page.wait_for_url("**q=double_*")
    ready(page, "#/datasets")
    assert rows.count() >= 3
    page.select_option("#d-status", "FAILED")
    page.wait_for_url("**status=FAILED*")
    ready(page, "#/datasets")
    assert rows.count() == 1 and "FAILED" in rows.first.inner_text()

    before = {r["id"] for r in project.get("/api/datasets?limit=500").json()["items"]}
    slow = run_dataset_script(project, "slow", f"slowly-{page.scheme}", wait=False)
    try:

        def part_way():
            items = project.get("/api/datasets?status=RUNNING").json()["items"]
            return [r for r in items if r["id"] not in before and 0 < r["tasks_done"] < 8]

        (run,) = project.wait_until(part_way, what="a dataset run part way")
        page.goto(project.url + "/#/datasets")
        ready(page, "#/datasets")
        page.click(f"a[href='#/datasets/{run['id']}']")
        ready(page, f"#/datasets/{run['id']}")
        assert "RUNNING" in page.locator("h1").inner_text()
        seen = page.locator("#d-progress").inner_text()
        assert " of 8 blocks" in seen and not seen.startswith("8 of 8")
        assert page.locator("main progress").first.get_attribute("max") == "8"
        shot(page, "dataset-running")
        # the live stream re-reads the run as it goes, to its end, without a reload
        page.wait_for_selector("h1 .badge:has-text('SUCCEEDED')", timeout=60_000)
        assert page.locator("#d-progress").inner_text() == "8 of 8 blocks · 800 rows"
        assert "of 8" in page.locator("main table").inner_text()
        shot(page, "dataset")
    finally:
        if slow.poll() is None:
            slow.kill()
        slow.wait()


def test_buckets_page_lists_and_downloads(project, page):
    page.goto(project.url + "/#/buckets")
    ready(page, "#/buckets")
    page.click("text=inbox")
    page.wait_for_selector("text=in/file-2.txt")
    with page.expect_download() as info:
        page.click("text=in/file-2.txt")
    path = info.value.path()
    assert Path(path).read_bytes() == b"data 2"
    assert info.value.suggested_filename == "file-2.txt"
    shot(page, "bucket")


def test_serving_page_shows_routes_replicas_and_models(project, page):
    page.goto(project.url + "/#/serving")
    ready(page, "#/serving")
    text = page.locator("main").inner_text()
    assert project.coordinator.serve_url in text
    assert "GET /hello" in text and "hello" in text
    replicas = page.locator("main table").nth(1).locator("tbody tr")
    assert replicas.count() >= 1 and "ok" in replicas.first.inner_text()  # a ready replica
    shot(page, "serving")
    page.click("main a:has-text('digits')")
    ready(page, "#/serving/digits")
    versions = page.locator("main table").first.inner_text()
    assert "prod" in versions and "accuracy 0.95" in versions
    assert "(new)" in page.locator("main table").nth(1).inner_text()
    shot(page, "model")


def test_keyboard_moves_between_pages(project, page):
    page.goto(project.url + "/")
    ready(page, "#/overview")
    page.keyboard.press("3")
    ready(page, "#/executions")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "e-machine"
    page.keyboard.press("Escape")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("2")
    ready(page, "#/invocations")
    assert page.locator("nav a[aria-current=page]").inner_text() == "Invocations"
    page.keyboard.press("8")
    ready(page, "#/datasets")
    page.keyboard.press("0")  # the tenth page
    ready(page, "#/serving")
    assert page.locator("nav a[aria-current=page]").inner_text() == "Serving"
