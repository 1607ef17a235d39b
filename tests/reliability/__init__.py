"""Reliability: a fault-injecting provider, load with faults, and the ``make soak`` driver."""
