"""Pure policy: circuit breakers, their sliding windows, retry decisions and the route table."""
