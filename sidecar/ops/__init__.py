"""The sidecar's own endpoints: health, probes, local checks, admin and metrics."""
