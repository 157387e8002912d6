"""The `thrifty` command. Only this package exits the process."""
