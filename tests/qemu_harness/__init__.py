"""A qtest harness in the style of QEMU's libqtest, with tests ported from QEMU's own ideas."""
