class Named:
    """Answers with the name in its config: which API served the request."""

    def __init__(self, config):
        self.name = config["name"]

    async def predict(self, payload):
        return {"served_by": self.name}
