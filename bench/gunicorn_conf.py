"""The gunicorn settings used for BOTH the floor app and the service (so the comparison is fair).

Overridable from the environment by the orchestrator: ``BENCH_BIND``, ``BENCH_WORKERS``,
``BENCH_THREADS``. No ``max_requests``: recycling workers would hide a memory leak from the RSS check.
"""

import os

bind = os.environ.get("BENCH_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("BENCH_WORKERS", "2"))
threads = int(os.environ.get("BENCH_THREADS", "1"))
# gthread keeps client connections alive between requests (sync workers close them after every answer,
# which would make the load generator spend its CPU on TCP handshakes instead of requests).
worker_class = "gthread"
keepalive = 30
timeout = 60
graceful_timeout = 10
backlog = 2048
# The access log would cost both apps the same; the service's own JSON request log stays on (stderr).
accesslog = None
errorlog = "-"
loglevel = "warning"
