"""Tests of sidecar.policy."""
