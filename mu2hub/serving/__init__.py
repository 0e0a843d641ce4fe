"""Serving a whole system: one process answers every task and computes what the tasks share once.

`engine` runs a batch of (task, image) rows as a tree over the tasks' paths; `pool` holds components once per id
under a byte budget; `batcher`, `app` and `server` are the HTTP server behind `mu2hub serve` (the `serve` extra).
Nothing is imported here, so `import mu2hub.serving` costs nothing (the CLI's metadata paths stay JAX-free).
"""
