"""Event shapes: S3 notification records and bus envelopes, and pattern matching on them."""

from headrace.events.envelope import (
    envelope_from_put_events_entry,
    envelope_size,
    make_envelope,
    validate_envelope,
)
from headrace.events.patterns import EventPattern, compile_pattern, matches
from headrace.events.s3 import S3Object, object_created_event, parse_s3_event, parse_s3_object

__all__ = [
    "EventPattern",
    "S3Object",
    "compile_pattern",
    "envelope_from_put_events_entry",
    "envelope_size",
    "make_envelope",
    "matches",
    "object_created_event",
    "parse_s3_event",
    "parse_s3_object",
    "validate_envelope",
]
