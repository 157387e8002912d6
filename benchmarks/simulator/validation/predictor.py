"""The validation run's predictor: a CPU-light stand-in for a model that takes ~25 ms per call.

Each call sleeps a lognormal time given by its p50 and p99 (the scenario's ``predictor.config``), so the
replica's service time is known and the simulator's service-time model can be checked against it.
"""

import math
import random
import time

Z99 = 2.3263478740408408


class Predictor:
    def __init__(self, config):
        self.mu = math.log(float(config.get("p50_s", 0.025)))
        p99 = float(config.get("p99_s", 0.05))
        self.sigma = (math.log(p99) - self.mu) / Z99
        self.rng = random.Random()

    def predict(self, payload):
        took = self.rng.lognormvariate(self.mu, self.sigma)
        time.sleep(took)
        return {"took_ms": round(1000 * took, 2)}
