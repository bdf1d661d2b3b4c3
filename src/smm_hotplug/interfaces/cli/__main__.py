"""``python -m smm_hotplug.interfaces.cli``: the command line."""

from smm_hotplug.interfaces.cli import main

main()
