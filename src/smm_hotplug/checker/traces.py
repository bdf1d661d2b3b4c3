"""Trace files: a check's shortest violation or a witness's schedule, saved so that
``simulate --replay`` re-runs it step by step — and proves it still says what it says.

A trace file is validated against a declared schema (``TraceFile``, pydantic) before anything
is run, with one line naming the field for anything wrong.  Replaying it (``checker.replay``)
then requires that

- its readable ``trace`` is its ``schedule``, step for step, with the descriptions this model gives
  those steps (an edited story is refused);
- it judges what the recorded run judged (``judged``: a check's properties; a witness judges none);
- the recorded outcome comes back: the same property violated at the same step (for
  ``hotplug-completes``: a last state from which the scenario can never complete), or the same
  hard case first reached at the same step.

The file records the tool version and the model digest (``checker.model_id``); a file made by
another model version that no longer replays says so instead of failing somewhere in the middle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter

from smm_hotplug.adversaries.catalog import resolve
from smm_hotplug.checker import jsonfile
from smm_hotplug.checker.model_id import model_digest, tool_version
from smm_hotplug.designs.catalog import get_design, with_options
from smm_hotplug.designs.history import with_fixes
from smm_hotplug.errors import UsageError
from smm_hotplug.firmware.options import DEFAULT_FIRMWARE, FIRMWARE_VERSIONS
from smm_hotplug.hw.config import ACCELS
from smm_hotplug.world import Scenario, System, make_system

FORMAT = "smm-hotplug-trace/3"
FORMAT_PREFIX = "smm-hotplug-trace/"
# Largest CPU count a trace may name (the schema's bound; the model checks the real limits).
MAX_COUNT = 255
MAX_BUDGET = 1_000_000  # the schema's bound on an adversary's budget


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
    firmware: str = DEFAULT_FIRMWARE
    smi_features: int | None = None  # what the firmware requests (None: the design's choice)
    revert: tuple[str, ...] = ()  # history entries whose fix is taken out (designs/history.py)
    backport: tuple[str, ...] = ()  # later upstream QEMU fixes put in

    def options(self) -> dict[str, Any]:
        return {
            "accel": self.accel,
            "vmm_keeps_smbase": self.vmm_keeps_smbase,
            "no_window_lock": self.no_window_lock,
            "no_smram_lock": self.no_smram_lock,
            "no_gate": self.no_gate,
            "no_broadcast": self.no_broadcast,
            "firmware": self.firmware,
            "smi_features": self.smi_features,
            "revert": list(self.revert),
            "backport": list(self.backport),
        }

    def system(self) -> System:
        opts = self.options()
        del opts["revert"], opts["backport"]
        design = with_fixes(with_options(get_design(self.design), **opts), self.revert, self.backport)
        return make_system(design, self.scenario, resolve(list(self.attacks), dict(self.budgets)))


# -- the schema ------------------------------------------------------------------------------------
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
Index = Annotated[StrictInt, Field(ge=0)]


class _Strict(BaseModel):
    # Unknown fields are refused, not ignored; every leaf type is strict (no "1" for 1, no 1.7 or
    # true for an integer, no "yes" for a boolean).
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopologyModel(_Strict):
    sockets: Count
    dies: Count
    cores: Count
    threads: Count


class ScenarioModel(_Strict):
    boot_cpus: Count
    max_cpus: Count
    plug: Count
    unplug: Count
    topology: TopologyModel | None = None  # absent: QEMU's default for the CPU counts


class OptionsModel(_Strict):
    accel: Literal[ACCELS] | None = None  # type: ignore[valid-type]
    vmm_keeps_smbase: StrictBool | None = None
    no_window_lock: StrictBool = False
    no_smram_lock: StrictBool = False
    no_gate: StrictBool = False
    no_broadcast: StrictBool = False
    firmware: Literal[FIRMWARE_VERSIONS] = DEFAULT_FIRMWARE  # type: ignore[valid-type]
    smi_features: Annotated[StrictInt, Field(ge=0, le=7)] | None = None
    revert: list[StrictStr] = []  # history entries whose fix the run took out
    backport: list[StrictStr] = []  # later upstream QEMU fixes the run put in


class StepModel(_Strict):
    step: Index
    actor: StrictStr
    choice: Index
    description: StrictStr


class TraceFile(_Strict):
    """A trace file (format ``smm-hotplug-trace/3``: /3 replaced /2's ``init_in_smm`` option by the
    accelerator profile, ``accel``, and added ``budgets``)."""

    format: Literal["smm-hotplug-trace/3"]
    tool_version: StrictStr
    model_digest: StrictStr
    design: StrictStr
    options: OptionsModel
    scenario: ScenarioModel
    attacks: list[StrictStr]
    budgets: dict[StrictStr, Annotated[StrictInt, Field(ge=1, le=MAX_BUDGET)]] = {}  # --budget ID=N
    judged: list[StrictStr]
    verdict: Literal["violated", "reached"]
    property: StrictStr | None
    case: StrictStr | None
    detail: StrictStr
    trace: list[StepModel]
    schedule: list[tuple[StrictStr, Index]]
    # hotplug-completes: the schedule goes once round a cycle from this step on (None: deadlock)
    cycle_start: Index | None = None


_SCHEMA = TypeAdapter(TraceFile)


def parse(text: str, path: str) -> TraceFile:
    """Validate a trace file's text against the schema; any problem is one UsageError line."""
    what = f"trace file {path}"
    doc = jsonfile.loads(text, what)
    if isinstance(doc, dict):
        fmt = doc.get("format")
        if isinstance(fmt, str) and fmt.startswith(FORMAT_PREFIX) and fmt != FORMAT:
            raise UsageError(
                f"{what} is in format {fmt}, written by another version of smm-hotplug; "
                f"this one reads {FORMAT} (re-create the trace with this version)"
            )
    return jsonfile.validate(doc, _SCHEMA, what)


def read(path: str) -> TraceFile:
    return parse(jsonfile.read_text(path, f"trace file {path}"), path)


# -- writing ---------------------------------------------------------------------------------------
def trace_document(setup: CheckSetup, result: Any, case: str | None = None) -> dict[str, Any]:
    """The trace file of a violated check or a reached witness (``result``: a CheckResult)."""
    doc = result.to_json()
    sc = setup.scenario
    out = {
        "format": FORMAT,
        "tool_version": tool_version(),
        "model_digest": model_digest(),
        "design": setup.design,
        "options": setup.options(),
        "scenario": {
            "boot_cpus": sc.boot_cpus,
            "max_cpus": sc.max_cpus,
            "plug": sc.plug,
            "unplug": sc.unplug,
            **({"topology": sc.topology._asdict()} if sc.topology else {}),
        },
        "attacks": list(setup.attacks),
        "budgets": dict(setup.budgets),
        "judged": list(result.judged),
        "verdict": doc["verdict"],
        "property": doc["property"],
        "case": case,
        "detail": doc["detail"],
        "trace": doc["trace"],
        "schedule": [[t["actor"], t["choice"]] for t in doc["trace"]],
        "cycle_start": doc["cycle_start"],
    }
    _SCHEMA.validate_python(out)  # what we write, we can read
    return out


def save(path: Path, setup: CheckSetup, result: Any, case: str | None = None) -> None:
    path.write_text(json.dumps(trace_document(setup, result, case), indent=2) + "\n")
