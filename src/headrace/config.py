"""Settings: where headrace keeps its state, which ledger, storage and executor it uses.

Read from `headrace.toml` in the project folder, then overridden by `HEADRACE_*` environment
variables. The defaults need no service at all: a `.headrace/` home with a SQLite ledger, local
folder buckets and a local process pool.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from headrace.errors import ConfigError

CONFIG_FILE = "headrace.toml"


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    app: str | None = None  # "module:attr" of the App
    home: Path = Path(".headrace")
    ledger: str = ""  # SQLAlchemy URL; default sqlite:///<home>/ledger.db
    storage: str = ""  # fsspec URL of the bucket root; default <home>/buckets
    # S3-compatible stores: the endpoint of `storage = "s3://…"` (SeaweedFS, MinIO, Ceph);
    # credentials come from the usual AWS variables or files
    storage_endpoint: str = ""
    # a store's change feed used as a wake-up beside listing: seaweedfs://filer-host:port
    storage_notifications: str = ""
    executor: str = "local"  # "local", "ray", "ray://host:10001" or "auto"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    poll_interval: float = 1.0  # seconds between list-and-compare passes of the watchers
    lease_seconds: float = 15.0  # how long a claimed invocation stays ours without renewal
    metrics: str = "127.0.0.1:0"  # Prometheus endpoint of the coordinator; "" disables it
    streams: str = ""  # stream logs: embedded folder (default <home>/streams), redis:// or nats://
    features: str = ""  # offline feature store root (fsspec URL or path); default <home>/features
    online_store: str = ""  # "" (SQLite under the features root) or a redis:// URL
    data_engine: str = "local"  # datasets: "local", "ray" or "ray://host:10001"
    ray_address: str = ""  # Ray jobs' cluster (http://host:8265); "" starts a head per job
    spark_master: str = ""  # Spark jobs' master (spark://host:7077); "" is local[*]
    serving: str = "local"  # HTTP routes' replicas: "local" processes, "ray" or "ray://host:10001"
    serve: str = "127.0.0.1:0"  # where `headrace up` serves the app's HTTP routes; "" does not
    serve_replicas: int = 2  # replicas of those routes under `headrace up`
    s3: str = "127.0.0.1:0"  # the S3 endpoint over the buckets (host:port); "" turns it off
    s3_access_key_id: str = ""  # keys S3 clients sign with; required off 127.0.0.1
    s3_secret_access_key: str = ""
    s3_region: str = "us-east-1"  # the region clients are told to sign for
    ledger_sync: str = (
        "normal"  # SQLite synchronous: "normal" survives process crashes, "full" power loss
    )

    @property
    def ledger_url(self) -> str:
        return self.ledger or f"sqlite:///{self.home / 'ledger.db'}"

    @property
    def storage_url(self) -> str:
        return self.storage or str(self.home / "buckets")

    @property
    def streams_url(self) -> str:
        return self.streams or str(self.home / "streams")

    @property
    def features_url(self) -> str:
        return self.features or str(self.home / "features")

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def tmp_root(self) -> Path:
        return self.home / "tmp"


_ENV = {
    "HEADRACE_APP": "app",
    "HEADRACE_HOME": "home",
    "HEADRACE_LEDGER": "ledger",
    "HEADRACE_STORAGE": "storage",
    "HEADRACE_STORAGE_ENDPOINT": "storage_endpoint",
    "HEADRACE_STORAGE_NOTIFICATIONS": "storage_notifications",
    "HEADRACE_EXECUTOR": "executor",
    "HEADRACE_WORKERS": "workers",
    "HEADRACE_POLL_INTERVAL": "poll_interval",
    "HEADRACE_LEASE_SECONDS": "lease_seconds",
    "HEADRACE_METRICS": "metrics",
    "HEADRACE_LEDGER_SYNC": "ledger_sync",
    "HEADRACE_STREAMS": "streams",
    "HEADRACE_FEATURES": "features",
    "HEADRACE_ONLINE_STORE": "online_store",
    "HEADRACE_DATA_ENGINE": "data_engine",
    "HEADRACE_RAY_ADDRESS": "ray_address",
    "HEADRACE_SPARK_MASTER": "spark_master",
    "HEADRACE_SERVING": "serving",
    "HEADRACE_SERVE": "serve",
    "HEADRACE_SERVE_REPLICAS": "serve_replicas",
    "HEADRACE_S3": "s3",
    "HEADRACE_S3_ACCESS_KEY_ID": "s3_access_key_id",
    "HEADRACE_S3_SECRET_ACCESS_KEY": "s3_secret_access_key",
    "HEADRACE_S3_REGION": "s3_region",
}


def listen_address(value: str, setting: str = "metrics") -> tuple[str, int]:
    """(host, port) of a "host:port" listen address; raises ConfigError naming what is wrong.

    IPv6 addresses go in brackets ("[::1]:9100"), as in URLs; an empty host means 127.0.0.1
    and port 0 any free port.
    """

    def bad(reason: str) -> ConfigError:
        return ConfigError(
            f"setting {setting!r} ({value!r})",
            reason,
            "write HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:9100 or [::1]:9100",
        )

    host, colon, port_text = value.rpartition(":")
    if not colon:
        raise bad("has no ':PORT'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise bad(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise bad("an IPv6 address must be written in brackets, e.g. [::1]:9100")
    if not port_text.isascii() or not port_text.isdigit():
        raise bad(f"the port {port_text!r} is not a number")
    port = int(port_text) if len(port_text) <= 5 else 65536
    if port > 65535:
        raise bad(f"the port {port_text} is above 65535")
    if any(c.isspace() for c in host) or "/" in host:
        raise bad(f"{host!r} is not a host name or IP address")
    return host or "127.0.0.1", port


def _coerce(name: str, value: Any, source: str) -> Any:
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = kinds[name]
    try:
        if kind == "int":
            out = int(value)
            if out < 1:
                raise ValueError("must be at least 1")
            return out
        if kind == "float":
            out = float(value)
            # nan passes `<= 0`, and nan or inf seconds would stall the loops that wait on it
            if not math.isfinite(out) or out <= 0:
                raise ValueError("must be a positive, finite number of seconds")
            return out
        if kind == "Path":
            return Path(value)
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        return value
    except (ValueError, TypeError) as exc:  # TypeError: e.g. a TOML list where a number goes
        shown = repr(value)
        shown = shown if len(shown) <= 60 else f"{shown[:40]}…({len(shown)} characters)"
        reason = str(exc) if len(str(exc)) <= 200 else str(exc)[:200] + "…"
        raise ConfigError(
            f"setting {name!r} from {source}",
            f"{shown} is not valid: {reason}",
            f"set {name} to a valid {kind}",
        ) from None


def load_settings(project_dir: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings for the project in `project_dir` (default: the current folder).

    Precedence: keyword overrides, then HEADRACE_* variables, then headrace.toml, then defaults.
    Relative paths are resolved against the project folder.
    """
    root = Path(project_dir or os.environ.get("HEADRACE_PROJECT", ".")).resolve()
    values: dict[str, Any] = {}
    path = root / CONFIG_FILE
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"is not valid TOML: {exc}", "fix the syntax") from None
        section = data.get("headrace", data)
        known = {f.name for f in fields(Settings)} - {"project_dir"}
        for key, value in section.items():
            if key not in known:
                raise ConfigError(
                    str(path), f"unknown setting {key!r}", f"use one of {', '.join(sorted(known))}"
                )
            values[key] = _coerce(key, value, str(path))
    for var, name in _ENV.items():
        if var in os.environ:
            values[name] = _coerce(name, os.environ[var], f"${var}")
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value, "arguments")
    settings = Settings(project_dir=root, **values)
    home = settings.home if settings.home.is_absolute() else root / settings.home
    settings = replace(settings, home=home)
    if settings.metrics:
        listen_address(settings.metrics)  # a bad address fails here, not when `up` binds it
    if settings.s3:
        listen_address(settings.s3, "s3")
    if settings.ledger_sync not in ("normal", "full"):
        raise ConfigError(
            "setting 'ledger_sync'", f"{settings.ledger_sync!r}", "use normal or full"
        )
    if settings.storage_endpoint:
        use_storage_endpoint(settings.storage_endpoint)
    for name in ("storage", "streams", "features"):
        value = getattr(settings, name)
        if value and "://" not in value and not Path(value).is_absolute():
            settings = replace(settings, **{name: str(root / value)})
    return settings


#: Variables that configure a project without a headrace.toml (containers, CI, jobs).
PROJECT_VARIABLES = ("HEADRACE_APP", "HEADRACE_HOME", "HEADRACE_LEDGER")


def find_project(project_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The project folder (`project_dir`, else `$HEADRACE_PROJECT`, else here) when it is one:
    it has a headrace.toml, or HEADRACE_APP, HEADRACE_HOME or HEADRACE_LEDGER says where the
    project's state is; otherwise None."""
    folder = Path(project_dir or os.environ.get("HEADRACE_PROJECT") or ".").resolve()
    if (folder / CONFIG_FILE).is_file() or any(v in os.environ for v in PROJECT_VARIABLES):
        return folder
    return None


def describe_settings(project_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every setting of the project in `project_dir`, as `setting_origins` gives them."""
    return setting_origins(load_settings(project_dir))


def setting_origins(settings: Settings) -> list[dict[str, Any]]:
    """One row per setting: its name, environment variable (`env`), effective value and where
    the value came from: "$VAR", the headrace.toml path, "arguments" (given to load_settings,
    e.g. a command-line option) or "default", in load_settings' order of precedence."""
    path = settings.project_dir / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text()) if path.exists() else {}
    except (OSError, tomllib.TOMLDecodeError):
        data = {}
    in_file = data.get("headrace", data) if isinstance(data, dict) else {}
    variables = {name: var for var, name in _ENV.items()}
    defaults = Settings(project_dir=settings.project_dir)
    derived = {"ledger": "ledger_url", "storage": "storage_url", "streams": "streams_url",
               "features": "features_url"}  # fmt: skip
    out = []
    for f in fields(Settings):
        if f.name == "project_dir":
            continue
        raw = getattr(settings, f.name)
        var = variables.get(f.name, "")
        if var and var in os.environ:
            origin = f"${var}"
        elif f.name in in_file:
            origin = str(path)
        elif raw != getattr(defaults, f.name) and f.name != "home":
            origin = "arguments"
        else:
            origin = "default"
        value = getattr(settings, derived.get(f.name, f.name))
        out.append({"name": f.name, "env": var, "value": str(value), "origin": origin})
    return out


def use_storage_endpoint(endpoint: str) -> None:
    """Send every `s3://` file system of this process, and of the processes it starts (workers,
    jobs), to `endpoint`: fsspec's own configuration, so each `ObjectStore`, a handler's
    `context.storage` and pandas' `s3://` paths in the coordinator's workers all use it."""
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            "setting 'storage_endpoint'",
            f"{endpoint!r} is not an http(s) URL",
            "set it to the S3 endpoint, e.g. http://127.0.0.1:8333",
        )
    import fsspec.config  # only when an endpoint is set: fsspec is imported lazily elsewhere

    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = endpoint
    os.environ["FSSPEC_S3_ENDPOINT_URL"] = endpoint
