"""The data plane: a lean HTTP/1.1 core, the replica server (runs a predictor) and the gateway (routes to replicas)."""
