"""thrifty: serve ML models as HTTP APIs at the lowest cost that meets their latency."""
