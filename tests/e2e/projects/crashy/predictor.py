import os
import time


class Predictor:
    def __init__(self, config: dict) -> None:
        self.pid = os.getpid()

    def predict(self, payload: dict) -> dict:
        if payload.get("die"):
            os._exit(17)
        if payload.get("fail"):
            raise RuntimeError("predictor failed on purpose")
        time.sleep(payload.get("sleep", 0))
        return {"pid": self.pid, "echo": payload.get("x")}
