import time


class Predictor:
    def __init__(self, config: dict) -> None:
        self.delay_s = float(config.get("delay_s", 0.05))

    def predict(self, payload: object) -> dict:
        time.sleep(self.delay_s)
        return {"ok": True}
