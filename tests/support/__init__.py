"""Shared test helpers: fake providers, fake clocks, a sidecar in a child process."""
