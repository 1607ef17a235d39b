"""``python -m tests.reliability.livepoll PORT``: poll ``/health/live`` until stdin closes.

Runs as its own process so that the load generator's event loop (and its GIL) never adds to the
measured latency. Prints one JSON line: polls, failures, max_ms.

A failure is what fails a kubelet's liveness probe: anything but a 200 within the chart's
``probes.liveness.timeoutSeconds`` (2 s). How fast the answers came is a figure, not a verdict.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time

LIVENESS_TIMEOUT = 2.0  # charts/sidecar/values.yaml: probes.liveness.timeoutSeconds


def poll(port: int, stop: threading.Event, interval: float = 0.05) -> dict[str, float]:
    polls = failures = 0
    max_ms = 0.0
    start = time.monotonic()
    samples: list[tuple[float, float]] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LIVENESS_TIMEOUT)
    while not stop.wait(interval):
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/health/live")
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LIVENESS_TIMEOUT)
        ms = (time.perf_counter() - t0) * 1000
        ok = ok and ms < LIVENESS_TIMEOUT * 1000
        max_ms = max(max_ms, ms)
        samples.append((ms, round(time.monotonic() - start, 2)))
        polls += 1
        failures += not ok
    conn.close()
    samples.sort(reverse=True)
    p99 = samples[len(samples) // 100][0] if samples else 0.0
    return {"polls": polls, "failures": failures, "max_ms": round(max_ms, 1), "p99_ms": round(p99, 1),
            "worst": samples[:5]}


def main() -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps(poll(int(sys.argv[1]), stop)), flush=True)


if __name__ == "__main__":
    main()
