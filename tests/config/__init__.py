"""Tests of sidecar.config."""
