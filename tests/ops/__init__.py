"""Tests of sidecar.ops."""
