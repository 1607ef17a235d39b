"""Pure policy: circuit breakers and their windows, retry decisions, the route table, and the
rate-limit core (GCRA, concurrency leases and AIMD, pauses, admission). No I/O, no clock of its own."""
