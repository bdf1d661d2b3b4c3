"""QEMU-compatible interfaces: command line, qtest and QMP over the one model."""
