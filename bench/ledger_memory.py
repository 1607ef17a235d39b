"""RSS growth of the job ledger's memory store after N distinct keys claimed and completed.

Each key stores what a small create answers (the bench's ~200-byte JSON and a few headers), the way
the sidecar settles a paid job. Runs in a fresh process so that nothing else has grown its heap:

    python -m bench.ledger_memory --keys 100000 [--max-entries 100000]
    # prints one JSON line: rss before/after (MiB), growth, entries, evictions

`measure` runs it in a subprocess (pinned like the core micro-benchmarks), at the store's default
cap and, when that cap does not fit in the 10 MiB goal, again at the cap that would.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.configs import SMALL_BODY
from bench.procs import tree_rss_bytes
from sidecar.state.memory_store import MemoryStore
from sidecar.state.records import StoredResponse

MiB = 1024 * 1024
GOAL_MIB = 10.0
HEADERS = (
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(SMALL_BODY))),
    ("Date", "Wed, 02 Dec 2026 21:00:00 GMT"),
)


def _rss() -> int:
    gc.collect()
    return tree_rss_bytes(os.getpid())


async def _fill(store: MemoryStore, keys: int) -> None:
    body = SMALL_BODY.encode()
    for n in range(keys):
        key = f"tg:{900_000_000 + n}:avatar"
        fingerprint = hashlib.sha256(key.encode() + body).hexdigest()
        claim = await store.claim("replicate", key, fingerprint)
        # A fresh bytes object per record, as each answer read from a socket is.
        response = StoredResponse(201, HEADERS, bytes(bytearray(body)))
        await store.complete("replicate", key, claim.record.claim_id, response, sent_at=None)


async def _run(keys: int, max_entries: int | None) -> dict[str, Any]:
    store = MemoryStore(instance_id="bench") if max_entries is None else MemoryStore(
        instance_id="bench", max_entries=max_entries
    )
    await store.start()
    before = _rss()
    await _fill(store, keys)
    after = _rss()
    health = await store.health()
    return {
        "ok": True,
        "keys": keys,
        "max_entries": store.max_entries,
        "rss_before_mib": before / MiB,
        "rss_after_mib": after / MiB,
        "growth_mib": (after - before) / MiB,
        "entries": health.entries,
        "evictions": health.evictions,
        "stored_body_bytes": store.stored_bytes,
    }


def measure(repo: Path, cpu: int | None, keys: int = 100_000) -> dict[str, Any]:
    """The figure at the default cap, plus (when over the goal) the run at a cap that meets it.

    Growth is not proportional to the cap (the allocator keeps what evicted records freed), so the
    cap is found by scaling down from the measured cost per entry, at most three tries.
    """
    first = _child(repo, cpu, keys, None)
    if not first.get("ok") or first["growth_mib"] <= GOAL_MIB or not first["entries"]:
        return first
    first["bytes_per_entry"] = first["growth_mib"] * MiB / first["entries"]
    cap, growth = first["max_entries"], first["growth_mib"]
    for _ in range(3):
        cap = max(1000, int(cap * GOAL_MIB / growth * 0.9) // 1000 * 1000)  # round, 10% headroom
        capped = _child(repo, cpu, keys, cap)
        first["capped"] = capped
        if not capped.get("ok") or capped["growth_mib"] <= GOAL_MIB or cap == 1000:
            break
        growth = capped["growth_mib"]
    return first


def _child(repo: Path, cpu: int | None, keys: int, max_entries: int | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.ledger_memory", "--keys", str(keys)]
    if max_entries is not None:
        argv += ["--max-entries", str(max_entries)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=repo, timeout=300, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"ok": False, "error": f"exit {proc.returncode}: {tail[0]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--max-entries", type=int, help="the store's cap (default: its own)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args.keys, args.max_entries))))


if __name__ == "__main__":
    main()
