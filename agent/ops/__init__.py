"""The operations layer: each use case a face offers, written once.

The CLI, the control socket (and through it the tray), the cleaner role and the
gallery call these functions; none of them reaches past this layer into the
cloud or pipeline modules for the same job. One small module per use case:
``backend`` (which backend a command talks to), ``cleanup``, ``dlq``, ``queues``
(depths, purge, stale resources), ``status``, ``provision``.

Modules here may import ``service.runtime``, ``pipeline``, ``cloud``, ``state``
and ``config``; they never import a face (``cli``, ``tray``, ``gallery``) or the
agent's control server. boto3 loads only when a backend is opened, so a face
can import this layer without paying for it.
"""
