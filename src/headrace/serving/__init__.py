"""HTTP routes to Lambda-style handlers: API Gateway events in, proxy responses out, served by
`headrace serve` over replica processes (see docs/serving.md)."""

from headrace.serving.apigateway import Request, Response, http_api_event, rest_event
from headrace.serving.routes import RouteSpec, RouteTable

__all__ = ["Request", "Response", "RouteSpec", "RouteTable", "http_api_event", "rest_event"]
