"""Differential conformance: the same scripted sessions against real QEMU and smm-hotplug-qemu."""
