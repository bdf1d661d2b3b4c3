"""Record transcripts from real QEMU: `python tests/conformance/record.py [SESSION ...]`.

The recorded files let the comparison run where QEMU is not installed; CI always compares
against live QEMU as well.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conformance.sessions import SESSIONS, run

OUT = Path(__file__).resolve().parent / "transcripts"


def main(names: list[str]) -> None:
    OUT.mkdir(exist_ok=True)
    for name in names or list(SESSIONS):
        transcript = run(name, "qemu")
        (OUT / f"{name}.json").write_text(json.dumps(transcript, indent=1) + "\n")
        print(f"recorded {name}: {len(transcript)} entries")


if __name__ == "__main__":
    main(sys.argv[1:])
