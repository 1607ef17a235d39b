"""Talking to upstreams: the attempt loop, the lean HTTP/1.1 pool and the SSRF guards."""
