"""The web console: a JSON API over the ledger and the app, and the pages that show it.

Served by the coordinator on its HTTP port beside `/metrics` (`server.metrics.serve_metrics`),
behind the same token. The pages are plain HTML, CSS and JavaScript modules shipped in
`static/`, so the console works offline; live updates come as server-sent events.
"""

from headrace.console.wsgi import Console, ConsoleContext

__all__ = ["Console", "ConsoleContext"]
