"""smm-hotplug: an executable, checkable model of SMM-safe CPU hotplug (QEMU/KVM + OVMF)."""

__version__ = "0.1.0"
