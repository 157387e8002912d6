"""Pure decision functions: (config, observed snapshot, prior state, now) -> (decision, new state, reason)."""
