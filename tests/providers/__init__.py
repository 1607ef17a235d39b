"""Tests of sidecar.providers."""
