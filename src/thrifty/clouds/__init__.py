"""Where nodes come from: the CloudProvider protocol and its implementations (this machine, simulated nodes)."""
