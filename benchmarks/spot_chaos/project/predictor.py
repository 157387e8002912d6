import time


class Predictor:
    """About 10 ms of work per request: long enough that a kill always catches requests in flight."""

    def __init__(self, config: dict) -> None:
        self.delay_s = float(config.get("delay_s", 0.01))

    def predict(self, payload: object) -> dict:
        time.sleep(self.delay_s)
        return {"ok": True}
