"""Where replicas run: the Engine protocol and its implementations (local subprocesses, fake)."""
