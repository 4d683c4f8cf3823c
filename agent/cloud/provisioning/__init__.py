"""The parts of ``agent.cloud.provision``, one module per kind of resource.

``common`` holds what they share (names, tags, the report, the run); ``buckets``, ``queues``, ``topics`` and
``notifications`` each create, check and remove one kind. ``agent.cloud.provision.Provisioner`` puts them in
order, with ``agent.cloud.lifecycle`` (which builds on ``common`` and ``buckets`` only: no import circle).
"""
