"""Executors run calls in workers: a local process pool by default, Ray tasks on a cluster."""
