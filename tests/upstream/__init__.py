"""Tests of sidecar.upstream."""
