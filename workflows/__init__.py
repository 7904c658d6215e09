"""Temporal: the journey workflow, its activities, the worker, and start/signal helpers.

Deliberately empty: Temporal's sandbox re-imports the workflow module's package on every
workflow run, so anything imported here (the client, activities and their database and SMTP
dependencies) would be loaded, and checked for non-determinism, inside the sandbox. Import from
the submodules: ``workflows.client``, ``workflows.journey``, ``workflows.worker``.
"""
