class Predictor:
    def __init__(self, config: dict) -> None:
        weights = config.get("weights", "missing.bin")
        raise FileNotFoundError(f"cannot open model weights {weights}")

    def predict(self, payload: object) -> object:
        return payload
