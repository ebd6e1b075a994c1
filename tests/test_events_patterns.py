"""EventBridge pattern matching: the AWS documentation's examples, invalid patterns, properties."""

import json
import pickle
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.errors import MalformedEvent, PatternError
from headrace.events import EventPattern, compile_pattern, make_envelope, matches
from headrace.events.patterns import OPERATORS

# The sample event of the EventBridge user guide ("Creating event patterns").
EC2_EVENT = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"},
}

# The sample event of aws/event-ruler's README, which the content-filtering examples use.
RULER_EVENT = {
    "version": "0",
    "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "012345679012",
    "time": "2017-10-02T16:24:49Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
    "detail": {
        "c-count": 5,
        "d-count": 3,
        "x-limit": 301.8,
        "source-ip": "10.0.0.33",
        "instance-id": "i-000000aaaaaa00000",
        "state": "running",
    },
}


def detail(**fields):
    return {"source": "my.app", "detail": fields}


EMPLOYEES = {
    "employees": [
        [
            {"firstName": "John", "lastName": "Doe"},
            {"firstName": "Anna", "lastName": "Smith"},
        ],
        [{"firstName": "Peter", "lastName": "Jones"}],
    ]
}

# (case id, pattern, event, expected)
CASES = [
    # --- exact values, AND across fields, OR within a list (user guide: event patterns)
    (
        "ec2-doc-pattern",
        {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 Instance State-change Notification"],
            "detail": {"state": ["terminated"]},
        },
        EC2_EVENT,
        True,
    ),
    (
        "ec2-doc-pattern-other-state",
        {"source": ["aws.ec2"], "detail": {"state": ["running", "pending"]}},
        EC2_EVENT,
        False,
    ),
    ("or-within-list", {"source": ["aws.ec2", "aws.fargate"]}, EC2_EVENT, True),
    ("and-across-fields", {"source": ["aws.ec2"], "region": ["eu-west-1"]}, EC2_EVENT, False),
    ("field-absent-in-event", {"detail": {"nope": ["x"]}}, EC2_EVENT, False),
    ("strings-are-case-sensitive", {"source": ["AWS.EC2"]}, EC2_EVENT, False),
    # --- arrays in events match when any element matches (user guide: arrays)
    (
        "array-intersection",
        {"resources": ["arn:x", EC2_EVENT["resources"][0], "arn:y"]},
        EC2_EVENT,
        True,
    ),
    ("array-no-intersection", {"resources": ["arn:x", "arn:y"]}, EC2_EVENT, False),
    ("array-of-numbers", {"detail": {"n": [3]}}, detail(n=[1, 2, 3]), True),
    ("nested-arrays-flatten", {"detail": {"n": [3]}}, detail(n=[[1], [2, [3]]]), True),
    # --- null and empty strings (user guide: null values), not interchangeable
    ("empty-string", {"detail": {"eventVersion": [""]}}, detail(eventVersion=""), True),
    ("null", {"detail": {"responseElements": [None]}}, detail(responseElements=None), True),
    ("empty-string-not-null", {"detail": {"v": [""]}}, detail(v=None), False),
    ("null-not-empty-string", {"detail": {"v": [None]}}, detail(v=""), False),
    ("null-not-absent", {"detail": {"v": [None]}}, detail(), False),
    # --- numbers and booleans as exact values
    ("number-exact", {"detail": {"Price": [100]}}, detail(Price=100), True),
    ("number-exact-float-form", {"detail": {"x": [301.8]}}, detail(x=3.018e2), True),
    ("number-exact-int-float", {"detail": {"Price": [100]}}, detail(Price=100.0), True),
    ("number-not-string", {"detail": {"Price": [100]}}, detail(Price="100"), False),
    ("string-not-number", {"detail": {"Price": ["100"]}}, detail(Price=100), False),
    ("boolean-true", {"detail": {"ok": [True]}}, detail(ok=True), True),
    ("boolean-not-one", {"detail": {"ok": [True]}}, detail(ok=1), False),
    ("one-not-boolean", {"detail": {"n": [1]}}, detail(n=True), False),
    ("zero-not-false", {"detail": {"n": [0]}}, detail(n=False), False),
    # --- prefix (content filtering: prefix matching)
    ("prefix", {"time": [{"prefix": "2017-10-02"}]}, RULER_EVENT, True),
    ("prefix-no", {"time": [{"prefix": "2017-10-03"}]}, RULER_EVENT, False),
    ("prefix-region", {"region": [{"prefix": "us-"}]}, RULER_EVENT, True),
    ("prefix-only-strings", {"detail": {"n": [{"prefix": "1"}]}}, detail(n=123), False),
    (
        "prefix-ignore-case",
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        detail(service="EVENTBRIDGE"),
        True,
    ),
    (
        "prefix-ignore-case-no",
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        detail(service="Event-Bus"),
        False,
    ),
    # --- suffix
    ("suffix", {"detail": {"FileName": [{"suffix": ".png"}]}}, detail(FileName="a.png"), True),
    ("suffix-no", {"detail": {"FileName": [{"suffix": ".png"}]}}, detail(FileName="a.jpg"), False),
    (
        "suffix-case",
        {"detail": {"FileName": [{"suffix": ".png"}]}},
        detail(FileName="A.PNG"),
        False,
    ),
    (
        "suffix-ignore-case",
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        detail(FileName="IMAGE.PNG"),
        True,
    ),
    ("suffix-ruler", {"source": [{"suffix": "ec2"}]}, RULER_EVENT, True),
    # --- equals-ignore-case
    (
        "ignore-case",
        {"detail": {"Name": [{"equals-ignore-case": "alice"}]}},
        detail(Name="ALICE"),
        True,
    ),
    (
        "ignore-case-no",
        {"detail": {"Name": [{"equals-ignore-case": "alice"}]}},
        detail(Name="Alicia"),
        False,
    ),
    ("ignore-case-ruler", {"source": [{"equals-ignore-case": "AWS.EC2"}]}, RULER_EVENT, True),
    # --- wildcard
    (
        "wildcard-ruler",
        {"source": [{"wildcard": "Simple*Service"}]},
        {"source": "SimpleQueueService"},
        True,
    ),
    (
        "wildcard-empty-run",
        {"source": [{"wildcard": "Simple*Service"}]},
        {"source": "SimpleService"},
        True,
    ),
    ("wildcard-no", {"source": [{"wildcard": "Simple*Service"}]}, {"source": "SimpleQueue"}, False),
    (
        "wildcard-folder-png",
        {"detail": {"key": [{"wildcard": "dir/*.png"}]}},
        detail(key="dir/sub/a.png"),
        True,
    ),
    (
        "wildcard-folder-no",
        {"detail": {"key": [{"wildcard": "dir/*.png"}]}},
        detail(key="x/a.png"),
        False,
    ),
    ("wildcard-many", {"detail": {"k": [{"wildcard": "*a*b*"}]}}, detail(k="xxaxxbxx"), True),
    ("wildcard-order", {"detail": {"k": [{"wildcard": "*a*b*"}]}}, detail(k="xxbxxaxx"), False),
    ("wildcard-overlap", {"detail": {"k": [{"wildcard": "ab*ba"}]}}, detail(k="aba"), False),
    ("wildcard-escaped-star", {"detail": {"k": [{"wildcard": "a\\*b"}]}}, detail(k="a*b"), True),
    (
        "wildcard-escaped-star-no",
        {"detail": {"k": [{"wildcard": "a\\*b"}]}},
        detail(k="axb"),
        False,
    ),
    (
        "wildcard-escaped-backslash",
        {"detail": {"k": [{"wildcard": "a\\\\*"}]}},
        detail(k="a\\zz"),
        True,
    ),
    (
        "wildcard-no-star-is-exact",
        {"detail": {"k": [{"wildcard": "abc"}]}},
        detail(k="abcd"),
        False,
    ),
    ("wildcard-only-strings", {"detail": {"k": [{"wildcard": "*"}]}}, detail(k=5), False),
    # --- anything-but (content filtering: anything-but matching)
    ("ab-string", {"detail": {"state": [{"anything-but": "initializing"}]}}, RULER_EVENT, True),
    (
        "ab-string-no",
        {"detail": {"state": [{"anything-but": "initializing"}]}},
        detail(state="initializing"),
        False,
    ),
    ("ab-number", {"detail": {"x-limit": [{"anything-but": 123}]}}, RULER_EVENT, True),
    (
        "ab-number-no",
        {"detail": {"x-limit": [{"anything-but": 123}]}},
        detail(**{"x-limit": 123}),
        False,
    ),
    (
        "ab-string-list",
        {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}},
        RULER_EVENT,
        True,
    ),
    (
        "ab-string-list-no",
        {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}},
        detail(state="overloaded"),
        False,
    ),
    (
        "ab-number-list",
        {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}},
        RULER_EVENT,
        True,
    ),
    (
        "ab-number-list-no",
        {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}},
        detail(**{"x-limit": 200.0}),
        False,
    ),
    ("ab-prefix", {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}, RULER_EVENT, True),
    (
        "ab-prefix-no",
        {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}},
        detail(state="initializing"),
        False,
    ),
    (
        "ab-suffix",
        {"detail": {"FileName": [{"anything-but": {"suffix": ".png"}}]}},
        detail(FileName="a.txt"),
        True,
    ),
    (
        "ab-suffix-no",
        {"detail": {"FileName": [{"anything-but": {"suffix": ".png"}}]}},
        detail(FileName="a.png"),
        False,
    ),
    (
        "ab-ignore-case",
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}},
        detail(state="running"),
        True,
    ),
    (
        "ab-ignore-case-no",
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}},
        detail(state="INITIALIZING"),
        False,
    ),
    (
        "ab-ignore-case-list-no",
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": ["a", "B"]}}]}},
        detail(state="b"),
        False,
    ),
    (
        "ab-wildcard",
        {"detail": {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}},
        detail(FilePath="/usr/bin/tool"),
        True,
    ),
    (
        "ab-wildcard-no",
        {"detail": {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}},
        detail(FilePath="/usr/lib/tool"),
        False,
    ),
    ("ab-absent-field", {"detail": {"state": [{"anything-but": "x"}]}}, detail(), False),
    (
        "ab-null-value",
        {"detail": {"command": [{"anything-but": ["no-message"]}]}},
        detail(command=None),
        True,
    ),
    ("ab-number-vs-string", {"detail": {"v": [{"anything-but": ["5"]}]}}, detail(v=5), True),
    (
        "ab-prefix-non-string",
        {"detail": {"v": [{"anything-but": {"prefix": "1"}}]}},
        detail(v=12),
        True,
    ),
    (
        "ab-array-any-element",
        {"detail": {"v": [{"anything-but": "a"}]}},
        detail(v=["a", "b"]),
        True,
    ),
    (
        "ab-array-all-excluded",
        {"detail": {"v": [{"anything-but": "a"}]}},
        detail(v=["a", "a"]),
        False,
    ),
    # --- numeric (content filtering: numeric matching)
    (
        "numeric-ruler",
        {
            "detail": {
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"numeric": ["=", 3.018e2]}],
            }
        },
        RULER_EVENT,
        True,
    ),
    (
        "numeric-range-top-closed",
        {"detail": {"n": [{"numeric": [">", 0, "<=", 5]}]}},
        detail(n=5),
        True,
    ),
    (
        "numeric-range-bottom-open",
        {"detail": {"n": [{"numeric": [">", 0, "<=", 5]}]}},
        detail(n=0),
        False,
    ),
    (
        "numeric-range-above",
        {"detail": {"n": [{"numeric": [">", 0, "<=", 5]}]}},
        detail(n=5.000001),
        False,
    ),
    (
        "numeric-range-closed",
        {"detail": {"n": [{"numeric": [">=", 10, "<", 20]}]}},
        detail(n=10),
        True,
    ),
    (
        "numeric-range-top-open",
        {"detail": {"n": [{"numeric": [">=", 10, "<", 20]}]}},
        detail(n=20),
        False,
    ),
    ("numeric-lt-no", {"detail": {"n": [{"numeric": ["<", 10]}]}}, detail(n=10), False),
    ("numeric-le", {"detail": {"n": [{"numeric": ["<=", 10]}]}}, detail(n=10), True),
    ("numeric-gt-negative", {"detail": {"n": [{"numeric": [">", -1.5]}]}}, detail(n=-1), True),
    ("numeric-ge-no", {"detail": {"n": [{"numeric": [">=", 7]}]}}, detail(n=6.99), False),
    ("numeric-eq-no", {"detail": {"x": [{"numeric": ["=", 301.8]}]}}, detail(x=301.9), False),
    ("numeric-only-numbers", {"detail": {"n": [{"numeric": [">", 0]}]}}, detail(n="5"), False),
    ("numeric-not-booleans", {"detail": {"n": [{"numeric": [">", 0]}]}}, detail(n=True), False),
    ("numeric-array", {"detail": {"n": [{"numeric": [">", 10]}]}}, detail(n=[1, 20]), True),
    # --- cidr (content filtering: IP address matching)
    ("cidr", {"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}, RULER_EVENT, True),
    ("cidr-edge", {"detail": {"ip": [{"cidr": "10.0.0.0/24"}]}}, detail(ip="10.0.0.255"), True),
    ("cidr-outside", {"detail": {"ip": [{"cidr": "10.0.0.0/24"}]}}, detail(ip="10.0.1.1"), False),
    ("cidr-not-ip", {"detail": {"ip": [{"cidr": "10.0.0.0/24"}]}}, detail(ip="10.0.0.x"), False),
    ("cidr-ipv6", {"detail": {"ip": [{"cidr": "2001:db8::/32"}]}}, detail(ip="2001:db8::1"), True),
    ("cidr-ipv6-vs-ipv4", {"detail": {"ip": [{"cidr": "::/0"}]}}, detail(ip="10.0.0.1"), False),
    # --- exists (content filtering: exists matching)
    ("exists-true", {"detail": {"state": [{"exists": True}]}}, EC2_EVENT, True),
    (
        "exists-true-object-is-not-a-leaf",
        {"detail": {"state": [{"exists": True}]}},
        {"detail": {"c-count": {"c1": 100}}},
        False,
    ),
    ("exists-true-null-counts", {"detail": {"v": [{"exists": True}]}}, detail(v=None), True),
    ("exists-false-absent", {"detail": {"c-count": [{"exists": False}]}}, EC2_EVENT, True),
    (
        "exists-false-intermediate-node",
        {"detail": {"c-count": [{"exists": False}]}},
        {"detail": {"state": "x", "c-count": {"c1": 100}}},
        True,
    ),
    ("exists-false-present", {"detail": {"c-count": [{"exists": False}]}}, RULER_EVENT, False),
    ("exists-false-absent-parent", {"detail": {"v": [{"exists": False}]}}, {"source": "x"}, True),
    ("exists-false-empty-array", {"detail": {"v": [{"exists": False}]}}, detail(v=[]), True),
    ("exists-true-empty-array", {"detail": {"v": [{"exists": True}]}}, detail(v=[]), False),
    ("exists-true-array", {"detail": {"v": [{"exists": True}]}}, detail(v=["a"]), True),
    ("exists-false-or-value", {"detail": {"v": [{"exists": False}, "a"]}}, detail(v="a"), True),
    ("exists-false-or-value-no", {"detail": {"v": [{"exists": False}, "a"]}}, detail(v="b"), False),
    # --- $or (comparison operators: Or; event-ruler README examples)
    (
        "or-list",
        {"detail": {"PaymentType": ["Credit", "Debit"]}},
        detail(PaymentType="Debit"),
        True,
    ),
    (
        "or-fields-first",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "New York", "Day": "Sunday"},
        True,
    ),
    (
        "or-fields-second",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Boston", "Day": "Monday"},
        True,
    ),
    (
        "or-fields-none",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Boston", "Day": "Sunday"},
        False,
    ),
    (
        "or-with-and",
        {
            "source": ["aws.cloudwatch"],
            "$or": [
                {"metricName": ["CPUUtilization", "ReadLatency"]},
                {"metricType": ["MetricType"], "namespace": ["AWS/EC2", "AWS/ES"]},
                {"scope": ["Service"]},
            ],
        },
        {"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/ES"},
        True,
    ),
    (
        "or-with-and-no",
        {
            "source": ["aws.cloudwatch"],
            "$or": [
                {"metricName": ["CPUUtilization", "ReadLatency"]},
                {"metricType": ["MetricType"], "namespace": ["AWS/EC2", "AWS/ES"]},
            ],
        },
        {"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/S3"},
        False,
    ),
    (
        "or-nested-in-or",
        {
            "source": ["aws.cloudwatch"],
            "$or": [
                {"metricName": ["CPUUtilization"]},
                {
                    "namespace": ["AWS/EC2"],
                    "$or": [{"metricId": [1234]}, {"spaceId": [1000]}],
                },
            ],
        },
        {"source": "aws.cloudwatch", "namespace": "AWS/EC2", "spaceId": 1000},
        True,
    ),
    (
        "or-parallel-nested-level",
        {
            "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
            "detail": {
                "$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["CloudWatch Alarm"]}]
            },
        },
        {"namespace": "AWS/EC2", "detail": {"source": "aws.cloudwatch"}},
        True,
    ),
    (
        "or-parallel-nested-level-no",
        {
            "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
            "detail": {
                "$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["CloudWatch Alarm"]}]
            },
        },
        {"namespace": "AWS/EC2", "detail": {"source": "aws.ec2"}},
        False,
    ),
    # --- arrays of objects are matched element by element (event-ruler: JSON array matching)
    ("array-objects", {"employees": {"firstName": ["Anna"]}}, EMPLOYEES, True),
    (
        "array-objects-same-element",
        {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}},
        EMPLOYEES,
        True,
    ),
    (
        "array-objects-across-elements",
        {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}},
        EMPLOYEES,
        False,
    ),
    # --- the content-filtering page's complex example
    (
        "complex",
        {
            "time": [{"prefix": "2017-10-02"}],
            "detail": {
                "state": [{"anything-but": "initializing"}],
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"anything-but": [100, 200, 300]}],
                "source-ip": [{"cidr": "10.0.0.0/8"}],
            },
        },
        RULER_EVENT,
        True,
    ),
    (
        "complex-one-field-fails",
        {
            "time": [{"prefix": "2017-10-02"}],
            "detail": {
                "state": [{"anything-but": "running"}],
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
            },
        },
        RULER_EVENT,
        False,
    ),
    ("nested-pattern-on-scalar", {"detail": {"state": ["x"]}}, {"detail": "flat"}, False),
]


@pytest.mark.parametrize(
    "pattern, event, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_documented_cases(pattern, event, expected):
    compiled = compile_pattern(pattern)
    assert compiled.matches(event) is expected
    # the same pattern given as JSON text, and the one-off helper, agree
    assert compile_pattern(json.dumps(pattern)).matches(event) is expected
    assert matches(pattern, event) is expected


def test_every_operator_has_a_match_and_a_no_match_case():
    def operators_in(value):
        if isinstance(value, dict):
            for key, sub in value.items():
                if key in OPERATORS:
                    yield key
                yield from operators_in(sub)
        elif isinstance(value, list):
            for sub in value:
                yield from operators_in(sub)

    seen = {True: set(), False: set()}
    for _, pattern, _, expected in CASES:
        seen[expected].update(operators_in(pattern))
    assert seen[True] == seen[False] == set(OPERATORS)


# --------------------------------------------------------------------------- invalid patterns

INVALID = [
    ("not json", "is not valid JSON"),
    ('{"source": ["a"],}', "is not valid JSON"),
    ("[]", "must be a JSON object"),
    ({}, "empty object"),
    ({"detail": {}}, "$.detail: is an empty object"),
    ({"source": "aws.ec2"}, 'wrap the value in an array: "source": ["aws.ec2"]'),
    ({"source": 5}, "must be an array of values or a nested object"),
    ({"source": []}, "$.source: is an empty array"),
    ({"source": [["a"]]}, "$.source[0]: is an array inside a value list"),
    ({"source": [{"a"}]}, "values must be strings, numbers"),
    ({"source": [float("nan")]}, "not a JSON number"),
    ({1: ["a"]}, "not a string"),
    ({"source": [{"prefx": "a"}]}, "unknown operator 'prefx'"),
    ({"source": [{}]}, "exactly one operator"),
    ({"source": [{"prefix": "a", "suffix": "b"}]}, "exactly one operator"),
    ({"source": [{"prefix": 1}]}, "prefix takes a string"),
    ({"source": [{"prefix": {"ignore-case": "a"}}]}, '{"equals-ignore-case": ..}'),
    ({"source": [{"suffix": None}]}, "suffix takes a string"),
    ({"source": [{"equals-ignore-case": ["a"]}]}, "equals-ignore-case takes a string"),
    ({"n": [{"numeric": 5}]}, "numeric takes an array"),
    ({"n": [{"numeric": ["<"]}]}, "got 1 items"),
    ({"n": [{"numeric": [">", 0, "<"]}]}, "got 3 items"),
    ({"n": [{"numeric": ["!=", 1]}]}, '$.n[0].numeric[0]: unknown numeric operator "!="'),
    ({"n": [{"numeric": ["<", "10"]}]}, "$.n[0].numeric[1]: must be a number"),
    ({"n": [{"numeric": ["<", True]}]}, "must be a number, got a boolean"),
    ({"n": [{"numeric": ["<", 10, ">", 0]}]}, "must start with the lower bound"),
    ({"n": [{"numeric": [">", 0, "=", 5]}]}, 'upper bound of a range must use "<" or "<="'),
    ({"n": [{"numeric": [">", 5, "<", 5]}]}, "lower bound 5 must be less than the upper bound 5"),
    ({"n": [{"numeric": [">", 0, "<", float("inf")]}]}, "not a JSON number"),
    ({"n": [{"exists": "true"}]}, "exists must be true or false"),
    ({"n": [{"anything-but": None}]}, "anything-but cannot exclude null"),
    ({"n": [{"anything-but": [True]}]}, "anything-but cannot exclude a boolean"),
    ({"n": [{"anything-but": ["a", 1]}]}, "mixes strings and numbers"),
    ({"n": [{"anything-but": []}]}, "empty list"),
    ({"n": [{"anything-but": {"prefix": ""}}]}, "an empty prefix would exclude every string"),
    ({"n": [{"anything-but": {"contains": "x"}}]}, 'anything-but does not support "contains"'),
    ({"n": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}, "holds 2 keys"),
    ({"n": [{"anything-but": {"suffix": 1}}]}, "anything-but suffix takes a string"),
    ({"n": [{"anything-but": {"wildcard": "a**"}}]}, "consecutive wildcard"),
    ({"n": [{"wildcard": "a**b"}]}, "consecutive wildcard characters at position 1"),
    ({"n": [{"wildcard": "a\\b"}]}, "invalid escape at position 1"),
    ({"n": [{"wildcard": "a\\"}]}, "invalid escape"),
    ({"n": [{"wildcard": 3}]}, "wildcard takes a string"),
    ({"n": [{"cidr": "10.0.0.0"}]}, "one '/' is required"),
    ({"n": [{"cidr": "10.0.0.0/x"}]}, "prefix length must be an integer"),
    ({"n": [{"cidr": "300.0.0.0/8"}]}, "malformed CIDR '300.0.0.0/8'"),
    ({"n": [{"cidr": 10}]}, "cidr takes a string"),
    ({"$or": {"a": ["b"]}}, "$.$or: must be an array of pattern objects"),
    ({"$or": [{"a": ["b"]}]}, "has 1 alternative(s)"),
    ({"$or": [{"a": ["b"]}, "c"]}, "$.$or[1]: must be a pattern object"),
    ({"$or": [{"a": ["b"]}, {}]}, "$.$or[1]: is an empty object"),
    ({"$or": [{"prefix": ["a"]}, {"b": ["c"]}]}, '"prefix" is an operator, not a field name'),
    ({"detail": {"c-count": [{"numeric": [">", "x"]}]}}, "$.detail.c-count[0].numeric[1]"),
    ({"detail": {"a b": ["x"], "c": [{"exists": 1}]}}, "$.detail.c[0].exists"),
    ({"detail": {"a.b": "x"}}, '$.detail["a.b"]'),
]


@pytest.mark.parametrize("pattern, fragment", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_patterns_say_where_what_and_how_to_fix(pattern, fragment):
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    message = str(info.value)
    assert fragment in message
    assert message.startswith("event pattern at $")
    assert info.value.fix  # every error tells the user what to do


def test_absurdly_deep_pattern_is_a_pattern_error():
    pattern: dict = {"leaf": ["x"]}
    for _ in range(150):
        pattern = {"a": pattern}
    with pytest.raises(PatternError, match="nested more than"):
        compile_pattern(pattern)
    with pytest.raises(PatternError):
        compile_pattern('{"a":' * 5000 + "[1]" + "}" * 5000)


# --------------------------------------------------------------------------- API


def test_filter_keeps_matching_events_in_order():
    pattern = compile_pattern({"detail": {"n": [{"numeric": [">", 2]}]}})
    events = [detail(n=i) for i in range(6)]
    assert pattern.filter(events) == events[3:]
    assert pattern.filter([]) == []


def test_events_as_json_text_and_non_objects():
    pattern = compile_pattern({"source": ["aws.ec2"]})
    assert pattern.matches(json.dumps(EC2_EVENT))
    assert pattern(EC2_EVENT)  # usable as a predicate
    with pytest.raises(MalformedEvent, match="must be a JSON object"):
        pattern.matches("[1, 2]")
    with pytest.raises(MalformedEvent, match="not valid JSON"):
        pattern.matches("{nope")
    with pytest.raises(MalformedEvent):
        pattern.filter([EC2_EVENT, 42])


def test_compiled_pattern_is_detached_picklable_and_comparable():
    source = {"source": ["aws.ec2"], "detail": {"state": [{"anything-but": "x"}]}}
    compiled = compile_pattern(source)
    source["source"].append("aws.s3")  # later edits of the caller's dict change nothing
    assert compiled.pattern == {"source": ["aws.ec2"], "detail": {"state": [{"anything-but": "x"}]}}
    clone = pickle.loads(pickle.dumps(compiled))
    assert clone == compiled and hash(clone) == hash(compiled)
    assert clone.matches(EC2_EVENT) and not clone.matches({"source": "aws.s3"})
    assert compile_pattern(compiled) is compiled
    assert isinstance(compiled, EventPattern)
    assert "aws.ec2" in repr(compiled)
    assert json.loads(compiled.to_json()) == compiled.pattern


def test_duplicate_keys_in_json_text_keep_the_last_like_eventbridge():
    text = (
        '{"detail": {"location": [{"prefix": "us-"}], "location": [{"anything-but": "us-east"}]}}'
    )
    pattern = compile_pattern(text)
    assert pattern.matches(detail(location="eu-west"))  # only anything-but is applied
    assert not pattern.matches(detail(location="us-east"))


def test_matches_helper_raises_pattern_errors():
    with pytest.raises(PatternError, match="empty array"):
        matches({"source": []}, EC2_EVENT)
    with pytest.raises(PatternError, match="not valid JSON"):
        matches("{", EC2_EVENT)
    with pytest.raises(PatternError):
        matches({"source": [object()]}, EC2_EVENT)


def test_envelopes_from_make_envelope_are_matched():
    event = make_envelope("my.orders", "Order Placed", {"total": 120.5, "items": ["a", "b"]})
    pattern = compile_pattern(
        {
            "source": [{"prefix": "my."}],
            "detail-type": ["Order Placed"],
            "detail": {"total": [{"numeric": [">=", 100]}], "items": ["b"]},
        }
    )
    assert pattern.matches(event)


def test_simple_matching_is_fast():
    pattern = compile_pattern(
        {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 Instance State-change Notification"],
            "detail": {"state": ["terminated"]},
        }
    )
    match, n = pattern.matches, 50_000
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            match(EC2_EVENT)
        best = max(best, n / (time.perf_counter() - start))
    assert best > 100_000, f"{best:.0f} matches/s"


# --------------------------------------------------------------------------- properties

_KEYS = st.sampled_from(
    [*OPERATORS, "$or", "source", "detail", "a", "b", "equals-ignore-case", "<", "="]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["<", "<=", ">", ">=", "=", "*", "a**", "\\", "10.0.0.0/8", "", "a*b"])
    | st.text(max_size=5)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_KEYS | st.integers(0, 2), inner, max_size=3)
    ),
    max_leaves=20,
)
_EVENT_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["source", "detail", "a", "b"]), inner, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=_JSON, events=st.lists(st.dictionaries(_KEYS, _EVENT_JSON, max_size=3), max_size=3))
def test_random_json_compiles_or_raises_pattern_error_and_matching_never_raises(pattern, events):
    try:
        compiled = compile_pattern(pattern)
    except PatternError:
        return
    for event in events:
        assert compiled.matches(event) in (True, False)
    assert compile_pattern(compiled.to_json()) == compiled


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_random_text_compiles_or_raises_pattern_error(text):
    try:
        compiled = compile_pattern(text)
    except PatternError:
        return
    assert compiled.matches({}) in (True, False)


def _wildcard_reference(pattern: str) -> re.Pattern | None:
    """Independent reading of the wildcard rules: a regex, or None where AWS rejects it."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 < len(pattern) and pattern[i + 1] in "*\\":
                out.append(re.escape(pattern[i + 1]))
                i += 2
                continue
            return None
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                return None
            out.append(".*")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


@settings(max_examples=300, deadline=None)
@given(
    wildcard=st.text(alphabet="ab*\\", max_size=8),
    values=st.lists(st.text(alphabet="ab*\\", max_size=10), max_size=8),
)
def test_wildcard_agrees_with_a_regex_reading(wildcard, values):
    reference = _wildcard_reference(wildcard)
    pattern = {"k": [{"wildcard": wildcard}]}
    negated = {"k": [{"anything-but": {"wildcard": wildcard}}]}
    if reference is None:
        with pytest.raises(PatternError):
            compile_pattern(pattern)
        return
    compiled, compiled_not = compile_pattern(pattern), compile_pattern(negated)
    for value in values:
        expected = reference.fullmatch(value) is not None
        assert compiled.matches({"k": value}) is expected, value
        assert compiled_not.matches({"k": value}) is (not expected), value


_NUMBER = st.integers(-50, 50) | st.floats(-50, 50, allow_nan=False)
_OPS = {
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
    "=": lambda x, y: x == y,
}


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(sorted(_OPS)),
    bound=_NUMBER,
    upper=st.none() | st.tuples(st.sampled_from(["<", "<="]), _NUMBER),
    values=st.lists(_NUMBER, max_size=6),
)
def test_numeric_agrees_with_python_comparisons(op, bound, upper, values):
    spec = [op, bound] if upper is None else [op, bound, *upper]
    valid = upper is None or (op in (">", ">=") and bound < upper[1])
    if not valid:
        with pytest.raises(PatternError):
            compile_pattern({"n": [{"numeric": spec}]})
        return
    compiled = compile_pattern({"n": [{"numeric": spec}]})
    for value in values:
        expected = _OPS[op](value, bound) and (upper is None or _OPS[upper[0]](value, upper[1]))
        assert compiled.matches({"n": value}) is expected, value


@settings(max_examples=200, deadline=None)
@given(
    listed=st.lists(st.text(alphabet="abAB", max_size=3), min_size=1, max_size=4),
    value=st.text(alphabet="abAB", max_size=3),
)
def test_exact_anything_but_and_ignore_case_are_set_semantics(listed, value):
    event = {"k": value}
    assert compile_pattern({"k": listed}).matches(event) is (value in listed)
    excluded = compile_pattern({"k": [{"anything-but": listed}]})
    assert excluded.matches(event) is (value not in listed)
    folded = {v.lower() for v in listed}
    ignore_case = compile_pattern({"k": [{"equals-ignore-case": v} for v in listed]})
    assert ignore_case.matches(event) is (value.lower() in folded)


def test_numpy_scalars_match_as_plain_values():
    np = pytest.importorskip("numpy")
    pattern = compile_pattern({"n": [{"numeric": [">", 1]}], "f": [True], "s": ["a"]})
    assert pattern.matches({"n": np.int64(5), "f": np.bool_(True), "s": np.str_("a")})
    assert not pattern.matches({"n": np.float32(0.5), "f": np.bool_(True), "s": np.str_("a")})
