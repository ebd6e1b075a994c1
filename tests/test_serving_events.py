"""Serving without a server: routes, API Gateway events and proxy responses, the replica
frames, `headrace generate-event` and `headrace invoke --event`."""

import base64
import json
import os

import pytest
from typer.testing import CliRunner

from headrace.app import App
from headrace.cli import app as cli
from headrace.errors import AppError
from headrace.serving import protocol
from headrace.serving.apigateway import (
    MalformedResponse,
    Request,
    Response,
    http_api_event,
    proxy_response,
    rest_event,
)
from headrace.serving.routes import RouteSpec, RouteTable

PNG = b"\x89PNG\r\n\x1a\n\x00\x00binary\xff"


def _request(**kw):
    base = dict(
        method="POST",
        path="/items/a%20b",
        query="tag=x&tag=y&q=1",
        headers=[("Host", "api"), ("X-Multi", "1"), ("X-Multi", "2"), ("Cookie", "a=1; b=2")],
        body=b'{"k": 1}',
        route_key="POST /items/{id}",
        resource="/items/{id}",
        params={"id": "a b"},
    )
    base.update(kw)
    return Request(**base)


def test_routes_match_literals_before_parameters_and_greedy_last():
    table = RouteTable(
        [
            RouteSpec("GET", "/items/{id}", "one"),
            RouteSpec("GET", "/items/new", "new"),
            RouteSpec("ANY", "/files/{proxy+}", "files"),
            RouteSpec("POST", "/classify_digit", "inference"),
        ]
    )
    assert table.find("GET", "/items/new")[0].function == "new"
    route, params = table.find("GET", "/items/7")
    assert (route.function, params) == ("one", {"id": "7"})
    route, params = table.find("DELETE", "/files/a/b/c.png")
    assert (route.function, params) == ("files", {"proxy": "a/b/c.png"})
    assert table.find("POST", "/classify_digit/")[0].function == "inference"  # trailing slash
    assert table.find("GET", "/classify_digit") is None
    assert table.find("GET", "/files") is None  # {proxy+} needs one segment at least
    assert table.find("GET", "/items/7/extra") is None


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        (("GET", "items", "f"), "does not start with '/'"),
        (("GET", "/a/{proxy+}/b", "f"), "not the last segment"),
        (("FETCH", "/a", "f"), "method 'FETCH'"),
        (("GET", "/a/<id>", "f"), "not a literal"),
        (("GET", "/a/../b", "f"), "'..' can never match"),
        (("GET", "/a/./b", "f"), "'.' can never match"),
        (("GET", "/_headrace/health", "f"), "server's own"),
        (("GET", "/d/{id}/{id}", "f"), r"\{id\} appears twice"),
        (("GET", "/d/{id}/{id+}", "f"), r"\{id\} appears twice"),
        (("GET", "/a//b", "f"), "empty segment"),
    ],
)
def test_bad_routes_are_refused_naming_the_route(route, reason):
    with pytest.raises(AppError, match=reason):
        RouteSpec(*route)


def test_app_http_binds_names_handlers_and_decorated_functions():
    app = App()
    app.function("pkg.mod.handler", name="inference")
    app.http("POST /classify_digit", "inference")
    app.http("GET /ping", "pkg.other.ping")

    @app.http("POST /predict", payload="json", max_batch_size=8)
    def predict(batch, context):
        return batch

    assert [(r.key, r.function) for r in app.routes] == [
        ("POST /classify_digit", "inference"),
        ("GET /ping", "ping"),
        ("POST /predict", "predict"),
    ]
    assert app.functions["predict"].handler.endswith(
        ":test_app_http_binds_names_handlers_and_decorated_functions.<locals>.predict"
    )
    with pytest.raises(AppError, match="is bound twice"):
        app.http("POST /classify_digit", "ping")
    with pytest.raises(AppError, match="is not registered"):
        app.http("GET /x", "missing")
    app.http("GET /x/{id}", "ping")
    with pytest.raises(AppError, match=r"same requests as GET /x/\{id\}.*never be reached"):
        app.http("GET /x/{name}", "ping")
    app.http("POST /x/{name}", "ping")  # another method: reachable
    with pytest.raises(AppError, match="is not 'METHOD /path'"):
        app.http("/nomethod", "ping")


def test_rest_event_has_multi_value_headers_query_and_path_parameters():
    event = rest_event(_request())
    assert event["httpMethod"] == "POST"
    assert event["path"] == "/items/a b"
    assert event["resource"] == event["requestContext"]["resourcePath"] == "/items/{id}"
    assert event["pathParameters"] == {"id": "a b"}
    assert event["headers"]["X-Multi"] == "2"
    assert event["multiValueHeaders"]["X-Multi"] == ["1", "2"]
    assert event["queryStringParameters"] == {"tag": "y", "q": "1"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["x", "y"], "q": ["1"]}
    assert (event["body"], event["isBase64Encoded"]) == ('{"k": 1}', False)
    ctx = event["requestContext"]
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert ctx["stage"] and ctx["requestId"] and isinstance(ctx["requestTimeEpoch"], int)


def test_binary_bodies_are_base64_encoded():
    request = _request(headers=[("Content-Type", "image/png")], body=PNG)
    for event in (rest_event(request), http_api_event(request)):
        assert event["isBase64Encoded"] is True
        assert base64.b64decode(event["body"]) == PNG
    # text that is not UTF-8 is binary too
    event = rest_event(_request(headers=[("Content-Type", "text/plain")], body=b"\xff\xfe"))
    assert event["isBase64Encoded"] is True


def test_http_api_event_lowercases_joins_and_splits_cookies():
    event = http_api_event(_request())
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /items/{id}"
    assert event["rawPath"] == "/items/a b"
    assert event["rawQueryString"] == "tag=x&tag=y&q=1"
    assert event["headers"] == {"host": "api", "x-multi": "1,2"}
    assert event["cookies"] == ["a=1", "b=2"]
    assert event["queryStringParameters"] == {"tag": "x,y", "q": "1"}
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["pathParameters"] == {"id": "a b"}


def test_proxy_responses_map_status_headers_and_base64_bodies():
    out = proxy_response(
        {
            "statusCode": 201,
            "headers": {"X-One": "a", "X-Both": "ignored"},
            "multiValueHeaders": {"X-Both": ["1", "2"], "Set-Cookie": ["a=1", "b=2"]},
            "body": base64.b64encode(PNG).decode(),
            "isBase64Encoded": True,
        },
        "v1",
    )
    assert out.status == 201
    assert out.body == PNG
    assert out.headers == [
        ("X-One", "a"),
        ("X-Both", "1"),
        ("X-Both", "2"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    assert proxy_response({"statusCode": 204}, "v1").body == b""
    # an HTTP API takes a bare value as a 200 JSON body, and cookies
    bare = proxy_response({"predicted_label": 3}, "v2")
    assert (bare.status, json.loads(bare.body)) == (200, {"predicted_label": 3})
    cookies = proxy_response({"statusCode": 200, "cookies": ["c=1"], "body": "x"}, "v2")
    assert ("set-cookie", "c=1") in cookies.headers


@pytest.mark.parametrize(
    "result",
    [
        None,
        "text",
        {"status": 200},
        {"statusCode": "abc"},
        {"statusCode": 99},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "headers": {"X": ["list"]}},
        {"statusCode": 200, "headers": {"X": "a\r\nInjected: yes"}},
        {"statusCode": 200, "headers": {"Bad Name": "x"}},
        {"statusCode": 200, "multiValueHeaders": {"X": "not a list"}},
        {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
        {"statusCode": 200, "extra": 1},
    ],
)
def test_malformed_proxy_responses_are_refused(result):
    with pytest.raises(MalformedResponse):
        proxy_response(result, "v1")


def test_frames_round_trip_requests_and_responses():
    payload = protocol.encode_request(
        3,
        b"GET",
        b"/a/b",
        b"x=1",
        b"10.0.0.1",
        1234,
        [b"id", b"7"],
        [b"Host", b"h", b"X-A", b"\xe9"],
        b"\x00body\x00",
    )
    route, request = protocol.decode_request(payload)
    assert route == 3
    assert (request.method, request.path, request.query, request.source_ip) == (
        "GET",
        "/a/b",
        "x=1",
        "10.0.0.1",
    )
    assert request.params == {"id": "7"}
    assert request.headers == [("Host", "h"), ("X-A", "\xe9")]
    assert request.body == b"\x00body\x00"
    encoded = protocol.encode_response(Response(418, [("a", "1"), ("a", "2")], b"\x00x"))
    assert protocol.decode_response(encoded) == (418, [(b"a", b"1"), (b"a", b"2")], b"\x00x")
    head = protocol.frame(protocol.REQUEST, 9, b"abc")
    assert protocol.HEADER.unpack_from(head) == (3, 9, protocol.REQUEST)


# -- the command line ------------------------------------------------------------------------------

HANDLERS = """
import base64, json
from headrace import App

app = App("t")

def classify(event, context):
    body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
    return {"statusCode": 200, "body": json.dumps({"size": len(body), "fn": context.function_name})}

def broken(event, context):
    raise ValueError("no such digit")

app.function(classify, name="inference")
app.function(broken)
app.http("POST /classify_digit", "inference")
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "headrace.toml").write_text('app = "handlers:app"\n')
    (tmp_path / "handlers.py").write_text(HANDLERS)
    (tmp_path / "digit.png").write_bytes(PNG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, ["-C", str(tmp_path), *args], env=env)

    return tmp_path, invoke


def test_generate_event_then_invoke_it_here(project):
    folder, invoke = project
    made = invoke(
        "generate-event",
        "apigateway",
        "--path",
        "/classify_digit",
        "--body-file",
        str(folder / "digit.png"),
        "-o",
        str(folder / "event.json"),
    )
    assert made.exit_code == 0, made.output
    event = json.loads((folder / "event.json").read_text())
    assert event["isBase64Encoded"] is True
    assert event["headers"]["Content-Type"] == "image/png"
    ran = invoke("invoke", "inference", "--event", str(folder / "event.json"))
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    assert result["statusCode"] == 200
    assert json.loads(result["body"]) == {"size": len(PNG), "fn": "inference"}


def test_invoke_event_prints_lambdas_error_shape_and_exits_1(project):
    folder, invoke = project
    (folder / "e.json").write_text("{}")
    ran = invoke("invoke", "broken", "--event", str(folder / "e.json"))
    assert ran.exit_code == 1
    error = json.loads(ran.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "no such digit")
    assert any("raise ValueError" in line for line in error["stackTrace"])
    missing = invoke("invoke", "broken", "--event", str(folder / "nope.json"))
    assert missing.exit_code == 2  # a usage error, before anything runs


def test_generate_event_http_api_and_s3(project):
    _, invoke = project
    v2 = invoke(
        "generate-event",
        "apigateway",
        "--http-api",
        "--method",
        "GET",
        "--path",
        "/items/7?a=1",
        "--resource",
        "/items/{id}",
        "--header",
        "Cookie: x=1",
    )
    event = json.loads(v2.stdout)
    assert (event["version"], event["routeKey"]) == ("2.0", "GET /items/{id}")
    assert event["pathParameters"] == {"id": "7"}
    assert event["cookies"] == ["x=1"]
    assert event["queryStringParameters"] == {"a": "1"}
    s3 = json.loads(invoke("generate-event", "s3", "--bucket", "b", "--key", "k 1.txt").stdout)
    record = s3["Records"][0]
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["object"]["key"] == "k+1.txt"
    bad = invoke("generate-event", "apigateway", "--path", "/x", "--resource", "/items/{id}")
    assert bad.exit_code == 2


def test_generate_event_types_a_binary_body_and_refuses_impossible_requests(project):
    folder, invoke = project
    (folder / "bin.dat").write_bytes(bytes(range(256)) * 4)  # not UTF-8, no known suffix
    (folder / "doc.json").write_text('{"n": 1}')
    made = invoke(
        "generate-event", "apigateway", "--path", "/echo", "--body-file", str(folder / "bin.dat")
    )
    assert made.exit_code == 0, made.output
    event = json.loads(made.stdout)
    assert event["isBase64Encoded"] is True
    assert event["headers"]["Content-Type"] == "application/octet-stream"
    assert base64.b64decode(event["body"]) == bytes(range(256)) * 4
    made = invoke(
        "generate-event", "apigateway", "--path", "/e", "--body-file", str(folder / "doc.json")
    )
    assert json.loads(made.stdout)["headers"]["Content-Type"] == "application/json"
    for args, named in (
        (["--method", "GE T", "--path", "/echo"], "--method"),
        (["--method", "", "--path", "/echo"], "--method"),
        (["--path", "no-slash"], "--path"),
    ):
        refused = invoke("generate-event", "apigateway", *args)
        assert refused.exit_code == 2, (args, refused.output)
        assert named in refused.output, refused.output
