"""Tests of sidecar.web."""
