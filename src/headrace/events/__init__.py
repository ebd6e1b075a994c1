"""Event shapes: S3 notification records and bus envelopes, and pattern matching on them."""

from headrace.events.s3 import S3Object, object_created_event, parse_s3_event

__all__ = ["S3Object", "object_created_event", "parse_s3_event"]
