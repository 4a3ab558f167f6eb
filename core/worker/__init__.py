"""The worker: the process that owns every model and runs all torch work for the app.

``messages`` (typed requests and events), ``engine`` (runs requests; no Qt, no network), ``protocol``
(the versioned wire format), ``server`` (``latent-canvas-worker``: the engine behind a WebSocket) and
``client`` (the app's side of the connection). The desktop app talks to an engine through these,
in-process on a thread or in a worker process on this machine or another.
"""
