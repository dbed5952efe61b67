"""The HTTP side of a park: the browser console, the REST API, ``/metrics`` and ``/healthz``.

``protocols`` sits below ``server`` (tests/test_dependencies.py), so nothing here imports the
park: :mod:`protocols.http.backend` says what the HTTP side needs of it (structural types), and
``server.web`` builds that from a running park and starts :func:`protocols.http.server.run_http`.
"""
