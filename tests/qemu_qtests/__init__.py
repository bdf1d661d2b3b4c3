"""QEMU 7.2's own qtest programs, built by .ci/build-qemu-qtests, run against smm-hotplug-qemu."""
