"""``matrix --expect FILE``: every cell's verdict (and violated property) against a committed
expectation, a regression gate for firmware and VMM changes.

The expectation is what ``matrix --json`` prints: a list of check objects.  Of each, ``design``,
``attacks``, ``scenario``, ``verdict`` and ``property`` are compared; the figures (states,
seconds, …) are not, since they change with every optimisation of the checker.  ``scenario``
and, where the file has them, ``firmware`` and ``accel`` must be this matrix's: a file for
another configuration is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictStr, TypeAdapter

from smm_hotplug.checker import jsonfile
from smm_hotplug.checker.explore import CheckResult
from smm_hotplug.checker.traces import ScenarioModel
from smm_hotplug.errors import UsageError
from smm_hotplug.world import Scenario


class ExpectedCell(BaseModel):
    # The other fields of a matrix --json cell (figures, trace, cases) are not compared.
    model_config = ConfigDict(extra="ignore", frozen=True)

    design: StrictStr
    attacks: list[StrictStr]
    scenario: ScenarioModel
    verdict: Literal["holds", "violated", "incomplete"]
    property: StrictStr | None
    firmware: StrictStr | None = None  # optional: a trimmed file may leave them out
    accel: StrictStr | None = None

    @property
    def column(self) -> str:
        return "+".join(self.attacks) or "none"


_SCHEMA = TypeAdapter(list[ExpectedCell])


def _scenario_text(sc: Scenario | ScenarioModel) -> str:
    return f"--boot-cpus {sc.boot_cpus} --max-cpus {sc.max_cpus} --plug {sc.plug} --unplug {sc.unplug}"


def _outcome(verdict: str, prop: str | None) -> str:
    return f"{verdict} {prop}" if prop else verdict


@dataclass
class Expectation:
    path: str
    cells: dict[tuple[str, str], ExpectedCell]

    def compare(self, results: list[CheckResult], restricted: bool) -> tuple[list[str], int]:
        """The cells that changed, one line each, and how many expected cells lay outside a
        ``restricted`` (--design/--attack) selection and were not compared."""
        changed = []
        ran = set()
        for r in results:
            key = (r.design, r.column)
            ran.add(key)
            exp = self.cells.get(key)
            now = _outcome(r.verdict, r.prop)
            if exp is None:
                changed.append(f"{r.design} × {r.column}: not in {self.path}, now {now}")
            elif (exp.verdict, exp.property) != (r.verdict, r.prop):
                changed.append(
                    f"{r.design} × {r.column}: expected {_outcome(exp.verdict, exp.property)}, now {now}"
                )
        outside = 0
        for key, exp in self.cells.items():
            if key in ran:
                continue
            if restricted:
                outside += 1
            else:
                changed.append(
                    f"{key[0]} × {key[1]}: expected {_outcome(exp.verdict, exp.property)}, "
                    "but the matrix has no such cell any more"
                )
        return changed, outside


def load(path: str, scenario: Scenario, firmware: str | None = None, accel: str | None = None) -> Expectation:
    """Read and validate an expectation file for a matrix of ``scenario`` (with ``firmware`` and
    ``accel``, checked against the cells that name theirs)."""
    what = f"expectation file {path}"
    doc = jsonfile.loads(jsonfile.read_text(path, what), what)
    cells = jsonfile.validate(doc, _SCHEMA, what)
    if not cells:
        raise UsageError(f"{what}: the document: an expectation lists at least one cell")
    by: dict[tuple[str, str], ExpectedCell] = {}
    for i, cell in enumerate(cells):
        key = (cell.design, cell.column)
        if key in by:
            raise UsageError(f"{what}: [{i}]: {cell.design} × {cell.column} is listed twice")
        sc = cell.scenario
        if (sc.boot_cpus, sc.max_cpus, sc.plug, sc.unplug) != (
            scenario.boot_cpus,
            scenario.max_cpus,
            scenario.plug,
            scenario.unplug,
        ):
            raise UsageError(
                f"{what}: [{i}].scenario: the expectation is for {_scenario_text(sc)}, "
                f"this matrix checks {_scenario_text(scenario)}"
            )
        for field, ours in (("firmware", firmware), ("accel", accel)):
            theirs = getattr(cell, field)
            if theirs is not None and ours is not None and theirs != ours:
                raise UsageError(
                    f"{what}: [{i}].{field}: the expectation is for {field} {theirs}, this matrix "
                    f"checks {field} {ours}"
                )
        by[key] = cell
    return Expectation(path, by)
