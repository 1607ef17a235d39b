"""`python -m bench`: load benchmark of the sidecar against HAProxy, nginx and bare aiohttp.

Not part of `make test`: it needs wrk, haproxy and nginx (`scripts/install-bench-tools.sh`) and two
CPU cores, and its figures only mean something on a quiet machine.
"""
