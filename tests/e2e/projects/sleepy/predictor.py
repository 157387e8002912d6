import os


class Predictor:
    def __init__(self, config: dict) -> None:
        self.pid = os.getpid()

    def predict(self, payload: dict) -> dict:
        return {"pid": self.pid, "echo": payload}
