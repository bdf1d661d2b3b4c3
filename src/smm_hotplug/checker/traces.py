"""Trace files: a violation's schedule, saved so that ``simulate --replay`` re-runs it step by step."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smm_hotplug.adversaries.catalog import resolve
from smm_hotplug.designs.catalog import get_design, with_options
from smm_hotplug.errors import UsageError
from smm_hotplug.world import Scenario, System, make_system

FORMAT = "smm-hotplug-trace/1"


@dataclass(frozen=True)
class CheckSetup:
    """Everything that defines a check: design (+ options), scenario and attacks."""

    design: str
    scenario: Scenario = field(default_factory=Scenario)
    attacks: tuple[str, ...] = ()
    accel: str | None = None
    budgets: tuple[tuple[str, int], ...] = ()  # (adversary id, budget) overrides
    vmm_keeps_smbase: bool | None = None
    no_window_lock: bool = False
    no_smram_lock: bool = False
    no_gate: bool = False
    no_broadcast: bool = False

    def options(self) -> dict[str, Any]:
        return {
            "accel": self.accel,
            "vmm_keeps_smbase": self.vmm_keeps_smbase,
            "no_window_lock": self.no_window_lock,
            "no_smram_lock": self.no_smram_lock,
            "no_gate": self.no_gate,
            "no_broadcast": self.no_broadcast,
        }

    def system(self) -> System:
        design = with_options(get_design(self.design), **self.options())
        return make_system(design, self.scenario, resolve(list(self.attacks), dict(self.budgets)))


def save(path: Path, setup: CheckSetup, result: dict) -> None:
    doc = {
        "format": FORMAT,
        "design": setup.design,
        "options": setup.options(),
        "scenario": {
            "boot_cpus": setup.scenario.boot_cpus,
            "max_cpus": setup.scenario.max_cpus,
            "plug": setup.scenario.plug,
            "unplug": setup.scenario.unplug,
        },
        "attacks": list(setup.attacks),
        "budgets": dict(setup.budgets),
        **{k: result[k] for k in ("verdict", "property", "detail", "trace")},
        "schedule": [[t["actor"], t["choice"]] for t in result["trace"]],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def load(path: str) -> tuple[CheckSetup, list[tuple[str, int]]]:
    """Read a trace file; any problem is one UsageError line."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"cannot read trace file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read trace file {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"trace file {path} is not JSON ({err.msg} at line {err.lineno})") from None
    try:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        sc = doc["scenario"]
        opts = doc.get("options", {})
        if opts.get("init_in_smm") is not None:
            raise UsageError(
                f"trace file {path} was recorded with --init-in-smm, which the accelerator profiles "
                "replaced (--accel kvm|tcg); record it again"
            )
        setup = CheckSetup(
            design=str(doc["design"]),
            scenario=Scenario(int(sc["boot_cpus"]), int(sc["max_cpus"]), int(sc["plug"]), int(sc["unplug"])),
            attacks=tuple(str(a) for a in doc.get("attacks", [])),
            accel=opts.get("accel"),
            budgets=tuple((str(a), int(n)) for a, n in doc.get("budgets", {}).items()),
            vmm_keeps_smbase=opts.get("vmm_keeps_smbase"),
            no_window_lock=bool(opts.get("no_window_lock", False)),
            no_smram_lock=bool(opts.get("no_smram_lock", False)),
            no_gate=bool(opts.get("no_gate", False)),
            no_broadcast=bool(opts.get("no_broadcast", False)),
        )
        schedule = [(str(a), int(c)) for a, c in doc["schedule"]]
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise UsageError(f"trace file {path} is malformed: {err}") from None
    return setup, schedule
