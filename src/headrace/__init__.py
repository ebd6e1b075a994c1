"""headrace: event-driven data and ML pipelines for Python."""
