import email
import email.policy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import update

from headrace.ledger import Ledger
from headrace.notify import (
    Email,
    File,
    Notifier,
    NotifyError,
    Topic,
    UnknownTopic,
    Webhook,
    subscription_from_dict,
)
from headrace.notify.schema import notify_deliveries


@pytest.fixture
def sqlite_ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield led
    led.close()


# -- a real HTTP receiver ------------------------------------------------------------------


class Receiver:
    """An http.server on 127.0.0.1 answering with the scripted statuses (then 200)."""

    def __init__(self, statuses=(), *, delay=0.0, trickle=False):
        self.statuses = list(statuses)
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                if trickle:  # a server that sends a header line every 0.2 s, for 10 s
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        for i in range(50):
                            self.wfile.write(f"X-Slow-{i}: 1\r\n".encode())
                            time.sleep(0.2)
                    except OSError:  # the client gave up, as it should
                        pass
                    return
                time.sleep(delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"nope" if status >= 300 else b"ok")

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=secret"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*args, **kwargs):
        made.append(Receiver(*args, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- webhook -------------------------------------------------------------------------------


def test_webhook_delivers_sns_notification(ledger, receiver):
    rx = receiver()
    hook = Webhook(rx.url, headers={"X-Team": "ops"}, timeout=5)
    notifier = Notifier(ledger, {"alerts": [hook]}, backoff=0.01)
    mid = notifier.publish(
        "alerts", {"job": "j1", "status": "FAILED"}, subject="job failed", attributes={"n": 3}
    )
    (req,) = rx.requests
    doc = json.loads(req["body"])
    assert doc["Type"] == "Notification" and doc["MessageId"] == mid
    assert json.loads(doc["Message"]) == {"job": "j1", "status": "FAILED"}
    assert doc["Subject"] == "job failed" and doc["TopicArn"].endswith(":alerts")
    assert doc["MessageAttributes"] == {"n": {"Type": "Number", "Value": "3"}}
    assert req["headers"]["X-Team"] == "ops"
    assert req["headers"]["x-amz-sns-message-id"] == mid
    (row,) = notifier.deliveries(mid)
    assert row["status"] == "delivered" and row["attempts"] == 1 and row["last_error"] is None
    assert "secret" not in row["subscription"]  # the query string may hold a token
    assert notifier.get_message(mid)["subject"] == "job failed"


def test_webhook_retries_then_delivers(ledger, receiver):
    rx = receiver([500, 500])
    notifier = Notifier(ledger, {"t": [Webhook(rx.url, timeout=5)]}, backoff=0.05)
    started = time.monotonic()
    mid = notifier.publish("t", "hello")
    assert time.monotonic() - started >= 0.05 + 0.1  # backed off 0.05 s then 0.1 s
    (row,) = notifier.deliveries(mid)
    assert row["status"] == "delivered" and row["attempts"] == 3
    assert row["last_error"] is None and len(rx.requests) == 3


def test_webhook_always_failing_is_recorded_not_raised(sqlite_ledger, receiver):
    rx = receiver([503] * 10)
    notifier = Notifier(sqlite_ledger, {"t": [Webhook(rx.url, timeout=5)]}, backoff=0.01)
    mid = notifier.publish("t", "hello")
    (row,) = notifier.deliveries(mid)
    assert row["status"] == "failed" and row["attempts"] == 3 and len(rx.requests) == 3
    assert row["last_error"].startswith("HTTP 503") and "nope" in row["last_error"]
    assert notifier.deliver_pending() == {}  # failed rows are not retried again


def test_webhook_never_hangs(sqlite_ledger, receiver):
    slow, trickle = receiver(delay=5), receiver(trickle=True)
    refused = f"http://127.0.0.1:{free_port()}/"
    notifier = Notifier(
        sqlite_ledger,
        {
            "t": [
                Webhook(slow.url, timeout=0.5, name="slow"),
                Webhook(trickle.url, timeout=0.5, name="trickle"),
                Webhook(refused, timeout=0.5, name="refused"),
            ]
        },
        max_attempts=1,
    )
    started = time.monotonic()
    mid = notifier.publish("t", "x")
    assert time.monotonic() - started < 2.5  # in parallel, each bounded by its deadline
    rows = {r["subscription"]: r for r in notifier.deliveries(mid)}
    assert rows["slow"]["last_error"] == "timed out after 0.5s"
    assert rows["trickle"]["last_error"] == "timed out after 0.5s"
    assert "ConnectionRefused" in rows["refused"]["last_error"]
    assert {r["status"] for r in rows.values()} == {"failed"}


def test_deferred_delivery_and_takeover_after_a_crash(ledger, receiver):
    rx = receiver([500])
    topics = {"t": [Webhook(rx.url, timeout=5)]}
    deferred = Notifier(ledger, topics, synchronous=False, backoff=0.0)
    mid = deferred.publish("t", "later")
    assert deferred.deliveries(mid)[0]["status"] == "pending" and rx.requests == []
    assert deferred.deliver_pending() == {"pending": 1}  # the 500, to be retried
    assert deferred.deliveries(mid)[0]["last_error"].startswith("HTTP 500")
    assert deferred.deliver_pending() == {"delivered": 1}
    assert deferred.deliveries(mid)[0]["attempts"] == 2
    # a publisher that died while delivering: its row stays leased until the lease runs out
    crashed = Notifier(ledger, topics, synchronous=False)
    mid2 = crashed.publish("t", "orphan")
    with ledger.begin() as conn:
        conn.execute(
            update(notify_deliveries)
            .where(notify_deliveries.c.message_id == mid2)
            .values(lease_owner="dead-one", lease_until=time.time() + 60)
        )
    assert deferred.deliver_pending() == {}
    with ledger.begin() as conn:
        conn.execute(
            update(notify_deliveries)
            .where(notify_deliveries.c.message_id == mid2)
            .values(lease_until=time.time() - 1)
        )
    assert deferred.deliver_pending() == {"delivered": 1}
    assert json.loads(rx.requests[-1]["body"])["Message"] == "orphan"


# -- email ---------------------------------------------------------------------------------


class Mailbox:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server():
    started = []

    def start(**kwargs):
        box = Mailbox()
        controller = Controller(box, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        started.append(controller)
        return box, controller.port

    yield start
    for c in started:
        c.stop()


def test_email_is_received_by_a_real_smtp_server(sqlite_ledger, smtp_server):
    box, port = smtp_server()
    sub = Email("127.0.0.1", port=port, sender="headrace@example.org", to=["a@x.org", "b@x.org"])
    notifier = Notifier(sqlite_ledger, [Topic("ops", [sub])], backoff=0.01)
    mid = notifier.publish("ops", "band 3 failed: no data", subject="composite failed")
    (env,) = box.envelopes
    assert env.mail_from == "headrace@example.org" and env.rcpt_tos == ["a@x.org", "b@x.org"]
    msg = email.message_from_bytes(env.content, policy=email.policy.default)
    assert msg["Subject"] == "composite failed" and msg["X-Headrace-Message-Id"] == mid
    assert msg.get_content().strip() == "band 3 failed: no data"
    assert notifier.deliveries(mid)[0]["status"] == "delivered"


def test_email_login_and_failures(sqlite_ledger, smtp_server):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"pw"
        return AuthResult(success=ok, handled=False)

    box, port = smtp_server(authenticator=authenticator, auth_require_tls=False)
    good = Email("127.0.0.1", ["a@x.org"], port=port, username="u", password="pw", name="good")
    bad = Email("127.0.0.1", ["a@x.org"], port=port, username="u", password="no", name="bad")
    down = Email("127.0.0.1", ["a@x.org"], port=free_port(), timeout=1, name="down")
    notifier = Notifier(sqlite_ledger, {"t": [good, bad, down]}, backoff=0.01, max_attempts=2)
    mid = notifier.publish("t", "hi")
    rows = {r["subscription"]: r for r in notifier.deliveries(mid)}
    assert rows["good"]["status"] == "delivered" and len(box.envelopes) == 1
    assert rows["bad"]["status"] == "failed" and "Authentication" in rows["bad"]["last_error"]
    assert rows["down"]["status"] == "failed" and rows["down"]["attempts"] == 2
    assert "pw" not in repr(good)  # the password stays out of logs


# -- file ----------------------------------------------------------------------------------


def test_file_subscriber_appends_whole_lines(sqlite_ledger, tmp_path):
    path = tmp_path / "logs" / "alerts.jsonl"
    notifier = Notifier(sqlite_ledger, {"alerts": [File(path, fsync=False)]})
    ids = []
    lock = threading.Lock()

    def publish(i):
        mid = notifier.publish("alerts", {"i": i, "pad": "x" * 5000})
        with lock:
            ids.append(mid)

    pool = [threading.Thread(target=publish, args=(i,)) for i in range(12)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    lines = path.read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    assert sorted(d["MessageId"] for d in docs) == sorted(ids)
    assert sorted(json.loads(d["Message"])["i"] for d in docs) == list(range(12))
    assert {r["status"] for r in notifier.deliveries(topic="alerts")} == {"delivered"}


def test_file_failure_is_recorded(sqlite_ledger, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    notifier = Notifier(sqlite_ledger, {"t": [File(blocker / "x.jsonl")]}, backoff=0.0)
    (row,) = notifier.deliveries(notifier.publish("t", "x"))
    assert row["status"] == "failed" and "Error" in row["last_error"]


# -- configuration and requests ------------------------------------------------------------


def test_configuration_errors_and_publish_request(sqlite_ledger, tmp_path):
    sub = subscription_from_dict({"kind": "file", "path": str(tmp_path / "a.jsonl")})
    notifier = Notifier(sqlite_ledger, {"t": [sub, {"kind": "file", "path": str(tmp_path / "b")}]})
    out = notifier.publish_request({"TopicArn": "arn:aws:sns:eu-west-1:123:t", "Message": "m"})
    assert len(notifier.deliveries(out["MessageId"])) == 2
    with pytest.raises(UnknownTopic) as err:
        notifier.publish("nope", "m")
    assert err.value.error_name == "SNS.NotFoundException"
    with pytest.raises(NotifyError, match="one non-empty line"):
        notifier.publish("t", "m", subject="a\r\nBcc: everyone@x.org")
    with pytest.raises(NotifyError, match="appear twice"):
        Topic("x", [File(tmp_path / "a"), File(tmp_path / "a")])
    with pytest.raises(NotifyError, match="unknown kind"):
        subscription_from_dict({"kind": "sms", "to": "1"})
    with pytest.raises(NotifyError, match="http"):
        Webhook("ftp://x/")
    with pytest.raises(NotifyError, match="not supported"):
        notifier.publish_request({"TopicArn": "t", "Message": "m", "MessageGroupId": "g"})


def test_envelope_carries_the_topic_arn_the_publisher_wrote(sqlite_ledger, tmp_path):
    out = tmp_path / "alerts.jsonl"
    arn = "arn:aws:sns:us-east-1:123456789012:alerts"
    notifier = Notifier(sqlite_ledger, {"alerts": [File(out)]})
    notifier.publish_request({"TopicArn": arn, "Message": "now"})
    # deferred: the envelope is rebuilt from the ledger by deliver_pending
    later = Notifier(sqlite_ledger, {"alerts": [File(out)]}, synchronous=False)
    later.publish_request({"TopicArn": "arn:aws-cn:sns:cn-north-1:999:alerts", "Message": "l"})
    assert later.deliver_pending() == {"delivered": 1}
    notifier.publish("alerts", "by name")  # no ARN written: the topic's own, an AWS-shaped one
    notifier.publish_request({"TopicArn": "alerts", "Message": "bare name"})
    arns = [json.loads(line)["TopicArn"] for line in out.read_text().splitlines()]
    local = "arn:aws:sns:local:000000000000:alerts"
    assert arns == [arn, "arn:aws-cn:sns:cn-north-1:999:alerts", local, local]
    with pytest.raises(NotifyError, match="not an SNS topic ARN") as err:
        notifier.publish_request({"TopicArn": "arn:aws:sqs:us-east-1:1:alerts", "Message": "m"})
    assert err.value.error_name == "SNS.InvalidParameterException"
    with pytest.raises(NotifyError, match="does not name topic"):
        notifier.publish("alerts", "m", topic_arn="arn:aws:sns:us-east-1:1:other")
    with pytest.raises(NotifyError, match="TopicArn is required"):
        notifier.publish_request({"Message": "m"})


def test_a_ledger_from_before_topic_arn_gets_the_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # notify_messages as earlier versions created it
        db.execute(
            "CREATE TABLE notify_messages (id VARCHAR(64) PRIMARY KEY, topic VARCHAR(256) NOT "
            "NULL, subject TEXT, message TEXT NOT NULL, attributes TEXT NOT NULL, created_at "
            "FLOAT NOT NULL)"
        )
        db.execute("INSERT INTO notify_messages VALUES ('old', 't', NULL, 'm', '{}', 0)")
    ledger = Ledger(f"sqlite:///{path}")
    try:
        out = tmp_path / "t.jsonl"
        notifier = Notifier(ledger, {"t": [File(out)]})
        notifier.publish_request({"TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": "m"})
        assert json.loads(out.read_text())["TopicArn"] == "arn:aws:sns:us-east-1:1:t"
        assert notifier.get_message("old")["topic_arn"] is None
    finally:
        ledger.close()
