class Doubler:
    """Only predict_batch: valid because thrifty.yaml sets serving.batching."""

    def __init__(self, config: dict) -> None:
        self.factor = int(config.get("factor", 2))

    def predict_batch(self, payloads: list) -> list:
        return [{"result": p["x"] * self.factor, "batch_size": len(payloads)} for p in payloads]
