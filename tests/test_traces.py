"""Trace files prove what they say or are refused: schema, trace array, recorded outcome, model
version, and what the recorded run judged."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli as run

from smm_hotplug.checker.explore import replay_trace
from smm_hotplug.checker.model_id import model_digest, model_files
from smm_hotplug.checker.replay import replay
from smm_hotplug.checker.run import run_check, run_witness
from smm_hotplug.checker.traces import FORMAT, CheckSetup, trace_document
from smm_hotplug.errors import UsageError
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario

ATTACK = "os-code-at-default-smbase"


@pytest.fixture(scope="module")
def attack() -> dict:
    """The shortest attack on sdm as a trace document (violated at its last step)."""
    setup = CheckSetup("sdm", Scenario(), (ATTACK,))
    res = run_check(setup)
    assert (res.verdict, res.prop) == ("violated", "smm-code-integrity")
    return trace_document(setup, res)


def last(doc: dict) -> int:
    return len(doc["schedule"]) - 1


@pytest.fixture(scope="module")
def gate() -> dict:
    """A witness trace: an OS-started CPU waits at the closed gate."""
    setup = CheckSetup("smram-default-smbase", Scenario(), ("os-early-init-sipi",))
    res = run_witness(setup, "started-cpu-at-gate")
    assert res.verdict == "reached"
    return trace_document(setup, res, case="started-cpu-at-gate")


@pytest.fixture(scope="module")
def stuck() -> dict:
    """A hotplug-completes violation: an unplug request QEMU's AML skips (edk2-current, whose
    APs wait in SMM for the ejects, so that the eject race of edk2-stable202211 is not found
    first)."""
    setup = CheckSetup("smram-default-smbase", Scenario(), ("unplug-race",), firmware="edk2-current")
    res = run_check(setup)
    assert (res.verdict, res.prop) == ("violated", "hotplug-completes")
    return trace_document(setup, res)


def write(tmp_path: Path, doc: dict | str, name: str = "t.json") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def refused(tmp_path: Path, doc: dict | str) -> str:
    with pytest.raises(UsageError) as err:
        replay(write(tmp_path, doc))
    return str(err.value)


# -- the recorded outcome must come back --------------------------------------------------------------
def test_the_saved_attack_replays_to_its_violation_at_its_last_step(tmp_path, attack):
    rep = replay(write(tmp_path, attack))
    assert rep.step == last(attack) and rep.other_model is None
    assert rep.outcome() == f"smm-code-integrity violated at step {last(attack)}"
    assert rep.run.property_status()["smm-code-integrity"]["first"]["step"] == last(attack)
    assert not rep.run.ok


def test_a_schedule_cut_short_does_not_reproduce(tmp_path, attack):
    cut = copy.deepcopy(attack)
    cut["trace"], cut["schedule"] = cut["trace"][:50], cut["schedule"][:50]
    out = run("simulate", "--replay", write(tmp_path, cut))
    assert out.returncode == 2, out.stdout
    assert out.stderr.count("\n") == 1 and "trace does not reproduce: " in out.stderr
    assert "smm-code-integrity is violated at step 49, but its 50 steps violate no property" in out.stderr


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("property", "smram-isolation", "replayed smm-code-integrity is violated first, at step {last}"),
        ("detail", "something else", "step {last} violates smm-code-integrity as '{cpu} executes os.payload"),
        ("verdict", "reached", "a witness trace names its case and no property"),
    ],
)
def test_a_different_recorded_outcome_is_refused(tmp_path, attack, field, value, needle):
    doc = dict(attack, **{field: value})
    cpu = attack["detail"].split()[0]  # the CPU the attack's payload runs on
    assert needle.format(last=last(attack), cpu=cpu) in refused(tmp_path, doc)


def test_the_violation_must_be_the_first(tmp_path, attack):
    """A step the model can take appended after the violation, described as the model describes
    it: the file now claims the violation one step later than the replay finds it."""
    setup = CheckSetup("sdm", Scenario(), (ATTACK,))
    system = setup.system()
    schedule = [(a, c) for a, c in attack["schedule"]]
    final = simulate(system, schedule=schedule).final
    extra = next(iter(system.moves(final)))
    longer = [*schedule, (extra.actor, extra.choice)]
    text = replay_trace(system, longer)[-1].text
    doc = copy.deepcopy(attack)
    doc["schedule"] = [list(s) for s in longer]
    doc["trace"].append(
        {"step": len(schedule), "actor": extra.actor, "choice": extra.choice, "description": text}
    )
    message = refused(tmp_path, doc)
    assert message.endswith(
        f"trace does not reproduce: the file says smm-code-integrity is violated at step {len(schedule)}, "
        f"but replayed smm-code-integrity is violated first, at step {len(schedule) - 1}"
    )


def test_a_hotplug_completes_violation_replays_to_a_state_that_can_never_complete(tmp_path, stuck):
    rep = replay(write(tmp_path, stuck))
    status = rep.run.property_status()["hotplug-completes"]
    assert status == {
        "status": "violated",
        "first": {"step": len(stuck["schedule"]), "text": stuck["detail"]},
    }
    assert stuck["detail"].startswith(f"deadlock: after {len(stuck['schedule'])} steps no actor can move")
    out = run("simulate", "--replay", write(tmp_path, stuck, "s.json"))
    assert out.returncode == 1, out.stderr
    assert "reproduces hotplug-completes violated: the scenario can never complete after its" in out.stdout


def test_a_hotplug_completes_trace_cut_before_its_stuck_state_does_not_reproduce(tmp_path, stuck):
    """Before the management's unplug request the scenario can still complete."""
    steps = len(stuck["schedule"])
    request = next(i for i, t in enumerate(stuck["trace"]) if "device_del" in t["description"])
    cut = copy.deepcopy(stuck)
    cut["trace"], cut["schedule"] = cut["trace"][:request], cut["schedule"][:request]
    assert request < steps
    message = refused(tmp_path, cut)
    assert (
        "trace does not reproduce: the file says hotplug-completes is violated, but from the state after"
        in (message)
    )


def test_a_witness_trace_replays_judging_nothing_like_the_witness_run(tmp_path, gate):
    assert gate["judged"] == [] and gate["case"] == "started-cpu-at-gate"
    out = run("simulate", "--replay", write(tmp_path, gate))
    assert out.returncode == 0, (out.stdout, out.stderr)
    steps = len(gate["schedule"])
    assert f"hard case started-cpu-at-gate first reached after step {steps - 1} ({steps} steps)" in out.stdout
    doc = json.loads(run("simulate", "--replay", write(tmp_path, gate), "--json").stdout)
    assert {p["status"] for p in doc["invariants"].values()} == {"not judged"}
    assert doc["replay"]["case"] == "started-cpu-at-gate" and doc["replay"]["judged"] == []


def test_a_violation_of_a_property_the_recorded_run_did_not_judge_is_marked_so():
    from smm_hotplug.report.text import violation_note
    from smm_hotplug.simulator import SimResult

    res = SimResult(None, [], None, "trace-end", judged=("smm-code-integrity",))  # type: ignore[arg-type]
    assert violation_note(res, "smbase-in-tseg", [(3, 4)]) == (
        "violated in steps 3-4; not judged by the recorded run"
    )
    assert violation_note(res, "smm-code-integrity", [(7, 7)]) == "violated in step 7"


def test_a_witness_trace_must_end_where_its_case_is_first_reached(tmp_path, gate):
    cut = copy.deepcopy(gate)
    cut["trace"], cut["schedule"] = cut["trace"][:-1], cut["schedule"][:-1]
    assert "no state on it is one" in refused(tmp_path, cut)


@pytest.mark.parametrize(
    "judged,needle",
    [
        (["smram-isolation"], "judged is [smram-isolation] but a check with these attacks judges"),
        ([], "judged is [] but a check with these attacks judges [smm-code-integrity, smram-isolation]"),
    ],
)
def test_what_the_run_judged_cannot_be_edited(tmp_path, attack, judged, needle):
    assert needle in refused(tmp_path, dict(attack, judged=judged))


def test_a_witness_file_cannot_claim_properties_were_judged(tmp_path, gate):
    message = refused(tmp_path, dict(gate, judged=["smm-code-integrity"]))
    assert "judged is [smm-code-integrity] but a witness search judges []" in message


# -- the readable trace is the schedule --------------------------------------------------------------
def _adversary_step(doc: dict) -> int:
    return next(i for i, t in enumerate(doc["trace"]) if t["actor"] == f"adv:{ATTACK}")


def _edit_step(doc: dict, **changes) -> dict:
    doc = copy.deepcopy(doc)
    doc["trace"][_adversary_step(doc)].update(changes)
    return doc


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda d, i: _edit_step(d, step=i + 1), "trace[{i}].step is {j}, expected {i}"),
        (lambda d, i: _edit_step(d, actor="cpu1"), "trace[{i}] is cpu1/0 but schedule[{i}] is adv:"),
        (
            lambda d, i: _edit_step(d, choice=1),
            "trace[{i}] is adv:os-code-at-default-smbase/1 but schedule[{i}]",
        ),
        (
            lambda d, i: _edit_step(d, description="the OS reads a newspaper"),
            "trace[{i}].description says 'the OS reads a newspaper', but step {i} of its schedule does "
            "'the OS writes its own code at 0x38000'",
        ),
        (lambda d, i: dict(d, trace=d["trace"][:50]), "trace has 50 steps but schedule has {n}"),
        (lambda d, i: dict(d, schedule=d["schedule"][:50]), "trace has {n} steps but schedule has 50"),
        (lambda d, i: dict(d, trace=[], schedule=[]), "schedule: the schedule is empty"),
    ],
)
def test_a_trace_array_that_is_not_the_schedule_is_refused(tmp_path, attack, edit, needle):
    i = _adversary_step(attack)
    message = needle.format(i=i, j=i + 1, n=len(attack["schedule"]))
    assert message in refused(tmp_path, edit(attack, i))


# -- the schema ----------------------------------------------------------------------------------------
def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    target = doc
    for key in parents:
        target = target[key]
    target[last] = value
    return doc


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d: _set(d, "options", None), "options: should be a JSON object"),
        (lambda d: _set(d, "options", []), "options: should be a JSON object"),
        (lambda d: _set(d, "options.no_gate", "yes"), "options.no_gate: should be true or false"),
        (lambda d: _set(d, "options.accel", "hvf"), "options.accel: should be 'kvm' or 'tcg'"),
        (lambda d: _set(d, "options.init_in_smm", "reset"), "options.init_in_smm: is not a field"),
        (lambda d: _set(d, "budgets", {"os-ipi": 0}), "budgets.os-ipi: should be greater than or equal to 1"),
        (lambda d: _set(d, "budgets", [1, 2]), "budgets: should be a JSON object"),
        (lambda d: _set(d, "scenario.plug", 1.7), "scenario.plug: should be an integer"),
        (lambda d: _set(d, "scenario.plug", True), "scenario.plug: should be an integer"),
        (lambda d: _set(d, "scenario.plug", "2"), "scenario.plug: should be an integer"),
        (lambda d: _set(d, "scenario.plug", -1), "scenario.plug: should be greater than or equal to 0"),
        (lambda d: _set(d, "attacks", ATTACK), "attacks: should be a JSON array"),
        (lambda d: _set(d, "schedule", {"0": 1}), "schedule: should be a JSON array"),
        (lambda d: _set(d, "schedule", [["mgmt"]]), "schedule[0][1]: is missing"),
        (lambda d: _set(d, "schedule", [["mgmt", 0, 1]]), "schedule[0]: should have at most 2 items"),
        (lambda d: _set(d, "trace", [{"step": 0}]), "trace[0].actor: is missing"),
        (lambda d: _set(d, "surprise", 1), "surprise: is not a field of this file"),
        (lambda d: {k: v for k, v in d.items() if k != "model_digest"}, "model_digest: is missing"),
        (lambda d: [d], "the document: should be a JSON object"),
        (
            lambda d: json.dumps(d).replace('"plug": 2', '"plug": ' + "9" * 5000),
            "scenario.plug: an integer of 5,000 digits is out of range",
        ),
        (
            lambda d: json.dumps(d).replace(
                '"options": {', '"options": {"x": ' + "[" * 100_000 + "]" * 100_000 + ", "
            ),
            "options.x" + "[0]" * 14 + ": nested more than 16 levels deep",
        ),
        (
            lambda d: json.dumps(d).replace('"plug": 2', '"plug": NaN'),
            "is not JSON (NaN is not a JSON number)",
        ),
        (lambda d: "{not json", "is not JSON (Expecting property name enclosed in double quotes at line 1)"),
        (
            lambda d: dict(d, format="smm-hotplug-trace/1"),
            "is in format smm-hotplug-trace/1, written by another",
        ),
        (lambda d: dict(d, format="something"), "format: should be 'smm-hotplug-trace/3'"),
        (lambda d: dict(d, design="nope"), "unknown design 'nope'"),
        (lambda d: dict(d, attacks=["nope"]), "unknown attack 'nope'"),
    ],
)
def test_a_malformed_file_is_one_line_naming_the_field_and_exit_2(tmp_path, attack, make, needle):
    out = run("simulate", "--replay", write(tmp_path, make(attack)))
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not out.stdout


@pytest.mark.parametrize(
    "args,given",
    [
        (["--design", "nope"], "--design"),
        (["--boot-cpus", "0"], "--boot-cpus"),
        (["--seed", "3", "--plug", "1"], "--plug, --seed"),
        (["--fw-no-gate"], "--fw-no-gate"),
    ],
)
def test_replay_refuses_other_setup_options(tmp_path, attack, args, given):
    out = run("simulate", "--replay", write(tmp_path, attack), *args)
    assert out.returncode == 2 and not out.stdout
    assert out.stderr.count("\n") == 1
    assert f"{given} cannot be combined with it (only --verbose, --json and --html can)" in out.stderr


# -- model version -------------------------------------------------------------------------------------
def test_a_trace_records_tool_version_and_model_digest(attack):
    assert attack["format"] == FORMAT
    assert attack["tool_version"] == "0.1.0"
    assert attack["model_digest"] == model_digest() and len(model_digest()) == 16


def test_a_trace_of_another_model_version_says_so(tmp_path, attack):
    other = dict(attack, model_digest="0123456789abcdef", tool_version="0.0.9")
    out = run("simulate", "--replay", write(tmp_path, other))
    assert out.returncode == 1  # it still reproduces here: said on stderr, run as usual
    assert out.stderr.startswith("smm-hotplug: note: trace file ")
    assert (
        "was made by another model version (smm-hotplug 0.0.9, model 0123456789abcdef; this is" in out.stderr
    )
    assert "it reproduces here" in out.stderr
    broken = _edit_step(other, description="the OS reads a newspaper")
    out = run("simulate", "--replay", write(tmp_path, broken))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "was made by another model version (smm-hotplug 0.0.9, model 0123456789abcdef" in out.stderr
    step = _adversary_step(other)
    assert f"and does not replay here: trace[{step}].description says" in out.stderr


def test_the_model_digest_covers_the_model_and_not_its_drivers():
    files = model_files()
    for part in (
        "designs/catalog.py",
        "firmware/smm_core.py",
        "guest/kernel.py",
        "world.py",
        "checker/cases.py",
    ):
        assert part in files
    for driver in ("interfaces/", "report/", "checker/explore.py", "checker/replay.py", "simulator.py"):
        assert not any(f.startswith(driver) for f in files), driver


def _digest_of(src: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(src))
    code = "from smm_hotplug.checker.model_id import model_digest; print(model_digest())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_model_digest_changes_with_the_firmware_and_not_with_the_cli(tmp_path):
    src = Path(__file__).resolve().parents[1] / "src"
    copy_ = tmp_path / "src"
    shutil.copytree(src, copy_, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    assert _digest_of(copy_) == model_digest()
    cli = copy_ / "smm_hotplug" / "interfaces" / "cli" / "options.py"
    cli.write_text(cli.read_text() + "\n# a driver change\n")
    assert _digest_of(copy_) == model_digest()
    core = copy_ / "smm_hotplug" / "firmware" / "smm_core.py"
    core.write_text(core.read_text() + "\n# a firmware change\n")
    assert _digest_of(copy_) != model_digest()
