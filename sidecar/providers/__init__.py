"""The providers: their registry and runtime state, and the request handlers per kind."""
