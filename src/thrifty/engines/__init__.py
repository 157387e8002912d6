"""Where replicas run: the Engine protocol and its implementations (local subprocesses; Ray actors with the
``ray`` extra, imported only when chosen; fake)."""
