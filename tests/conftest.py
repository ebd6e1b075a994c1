import os
import socket
import sys
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from headrace.streams.log import StreamLog, open_log
from tests.generated_data import generated_bands, generated_gribs  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PG_ADMIN = os.environ.get("HEADRACE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request, tmp_path):
    """A ledger on SQLite, and the same test again on a fresh PostgreSQL database."""
    from headrace.ledger import Ledger

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    led = Ledger(url)
    yield led
    led.close()


@pytest.fixture(scope="session", autouse=True)
def _own_cache_folder(tmp_path_factory):
    """headrace's cache (GRIB concepts) in the session's folder, not the user's ~/.cache; set
    in os.environ so that the processes tests start use it too."""
    previous = os.environ.get("HEADRACE_CACHE_DIR")
    os.environ["HEADRACE_CACHE_DIR"] = str(tmp_path_factory.mktemp("headrace-cache"))
    yield
    if previous is None:
        os.environ.pop("HEADRACE_CACHE_DIR", None)
    else:
        os.environ["HEADRACE_CACHE_DIR"] = previous


# Tests on the real third-party files skip without ../shared/data (a fresh clone); CI has it.
# Every such skip names "../shared/data" in its reason, so the summary line below counts them;
# tests/generated_data.py makes the data that still covers their behaviours on a fresh clone.
SHARED_MISSING = "../shared/data not found (the real third-party GRIB/raster/CSV files)"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real third-party test files (../shared/data); the test skips without them."""
    if not (SHARED_DATA / "grib").is_dir():
        pytest.skip(f"{SHARED_MISSING}: looked in {SHARED_DATA}")
    return SHARED_DATA


_DESCRIPTORS_LEFT: list[tuple[int, str]] = []  # (descriptors a test left open, its id)


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return 0


@pytest.fixture(autouse=True)
def _descriptors_left_open(request):
    """Which tests leave descriptors open in the test process: a whole run once went past
    1,024 of them (see the summary line)."""
    before = _open_descriptors()
    yield
    left = _open_descriptors() - before
    if left > 0:
        _DESCRIPTORS_LEFT.append((left, request.node.nodeid))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if sum(n for n, _ in _DESCRIPTORS_LEFT) >= 100:
        worst = sorted(_DESCRIPTORS_LEFT, reverse=True)[:5]
        terminalreporter.write_line(
            f"descriptors left open by tests: {sum(n for n, _ in _DESCRIPTORS_LEFT)}, most by "
            + ", ".join(f"{node} ({n})" for n, node in worst)
        )
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if "shared/data" in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        tests = "test" if len(skipped) == 1 else "tests"
        terminalreporter.write_line(
            f"{len(skipped)} {tests} skipped: {SHARED_MISSING}; CI runs them", yellow=True
        )


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The real PostgreSQL server on 127.0.0.1:5432 (started by .ci/run when it is down)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN}: {exc}")
    return PG_ADMIN


@pytest.fixture
def pg_url(pg_server):
    """A fresh database for one test, dropped afterwards."""
    import psycopg

    name = f"headrace_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_sessionfinish(session, exitstatus):
    session.config._headrace_exitstatus = int(exitstatus)


def pytest_unconfigure(config):
    # GDAL (rasterio), ecCodes' eckit and Ray each bundle native libraries (their own SQLite,
    # PROJ, ...); tearing all of them down at interpreter exit can crash after every test has
    # passed and the summary is printed. Leave without running native destructors, keeping the
    # real exit status.
    status = getattr(config, "_headrace_exitstatus", None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


# -- stream logs on every backend (embedded, and the real Redis and NATS servers) -----------

REDIS_URL = os.environ.get("HEADRACE_TEST_REDIS", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("HEADRACE_TEST_NATS", "nats://127.0.0.1:4222")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(params=["embedded", "redis", "nats"])
def open_stream(request, tmp_path):
    """open_stream(name=None, **options) → a StreamLog on this backend; all dropped at the end."""
    backend = request.param
    url = {"embedded": f"embedded://{tmp_path / 'streams'}", "redis": REDIS_URL, "nats": NATS_URL}[
        backend
    ]
    if backend != "embedded" and not _reachable(url):
        pytest.skip(f"{backend} server is not reachable at {url}")
    opened: list[StreamLog] = []
    names: set[str] = set()

    def factory(name: str | None = None, **options) -> StreamLog:
        log = open_log(url, name or f"t{uuid.uuid4().hex[:12]}", **options)
        opened.append(log)
        names.add(log.name)
        return log

    factory.url = url
    factory.backend = backend
    yield factory
    for log in opened:
        log.close()
    for name in names:
        open_log(url, name).drop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real S3 server (SeaweedFS) on 127.0.0.1, for the whole session; stopped after."""
    from tests import seaweed as sw

    server = sw.start(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def s3(seaweed, monkeypatch):
    """A fresh root bucket on the S3 server, this process set up to reach it:
    (its s3fs filesystem, its `s3://` URL, the server)."""
    import s3fs  # the `s3` extra, like the server itself

    from headrace.config import use_storage_endpoint

    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    use_storage_endpoint(seaweed.endpoint)
    root = f"headrace-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(endpoint_url=seaweed.endpoint, skip_instance_cache=True)
    fs.mkdir(root)
    return fs, f"s3://{root}", seaweed


@pytest.fixture(params=["compiled", "numpy"])
def dedup_path(request, monkeypatch):
    """Run a dedup test on the compiled kernel (numba) and on the vectorised numpy path: both
    must decide alike."""
    from headrace.streams.operators import dedup_kernel

    if request.param == "compiled":
        if dedup_kernel.compiled() is None:
            pytest.skip("numba is not installed (headrace[fast])")
    else:
        monkeypatch.setattr(dedup_kernel, "compiled", lambda: None)
    return request.param
