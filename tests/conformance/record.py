"""Record transcripts from real QEMU: `python tests/conformance/record.py [SESSION ...]`.

The recorded files let the comparison run where QEMU is not installed; CI always compares
against live QEMU as well.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conformance import accel_cmdline
from conformance.sessions import SESSIONS, run

OUT = Path(__file__).resolve().parent / "transcripts"


def main(names: list[str]) -> None:
    OUT.mkdir(exist_ok=True)
    if not names or "accel_cmdline" in names:
        answers = accel_cmdline.transcript("qemu")
        (OUT / "accel_cmdline.json").write_text(json.dumps(answers, indent=1) + "\n")
        print(f"recorded accel_cmdline: {len(answers)} command lines")
    for name in [n for n in names if n != "accel_cmdline"] if names else list(SESSIONS):
        transcript = run(name, "qemu")
        (OUT / f"{name}.json").write_text(json.dumps(transcript, indent=1) + "\n")
        print(f"recorded {name}: {len(transcript)} entries")


if __name__ == "__main__":
    main(sys.argv[1:])
