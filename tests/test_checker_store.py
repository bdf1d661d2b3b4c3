"""How the checker stores what it explored: pooled states and the flat state graph."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smm_hotplug.checker.graph import StateGraph
from smm_hotplug.checker.store import Codec
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario


def test_stored_states_are_equal_to_the_originals_and_share_equal_parts():
    system = CheckSetup("smram-default-smbase", Scenario(), ("concurrent-plug",)).system()
    a = simulate(system, seed=3).final
    b = simulate(system, seed=3).final  # the same run again: equal values, separate objects
    assert a == b and a.m.mem is not b.m.mem
    codec = Codec()
    ka, kb = codec.key(a), codec.key(b)
    assert ka == kb
    pa, pb = codec.world(ka), codec.world(kb)
    assert pa == a and hash(pa) == hash(a)
    assert pb == b and pb.m.mem is pa.m.mem and pb.m.cpus is pa.m.cpus and pb.m.cpuhp is pa.m.cpuhp
    assert all(x is y for x, y in zip(pa.m.cpus, pb.m.cpus, strict=True))
    c = system.initial()
    assert codec.key(c) != ka and codec.world(codec.key(c)) == c


def _graph(edges: dict[int, list[int]]) -> StateGraph:
    """States 0..n-1 with the given successors; BFS parents are irrelevant here."""
    g = StateGraph()
    for _ in range(1, len(edges)):
        g.add(0, "cpu0", 0)
    for s in range(len(edges)):
        g.expanded(edges[s])
    return g


def test_cannot_finish_finds_the_first_state_that_never_reaches_a_finished_one():
    # 0 -> 1 -> 3 (finished); 0 -> 2 <-> 4 (a livelock unless 4 counts as finished); 5 has no
    # moves and is not finished (a deadlock).
    g = _graph({0: [1, 2], 1: [3], 2: [4], 3: [], 4: [2], 5: []})
    assert g.cannot_finish([3]) == 2
    assert g.cannot_finish([3, 4]) == 5
    assert _graph({0: [1], 1: [0, 2], 2: []}).cannot_finish([2]) is None
    assert g.out_degree(0) == 2 and g.out_degree(5) == 0


@given(
    st.lists(st.tuples(st.sampled_from(["cpu0", "cpu1", "mgmt", "adv:x"]), st.integers(0, 9)), max_size=30)
)
def test_the_schedule_to_a_state_walks_back_up_its_parents(moves):
    g = StateGraph()
    for i, (actor, choice) in enumerate(moves):
        g.add(i, actor, choice)  # a chain: state i + 1 is reached from state i
    assert g.path_to(len(moves)) == moves


def test_the_matrix_reports_each_cell_as_it_finishes_and_returns_them_in_order():
    from smm_hotplug.checker.limits import Limits
    from smm_hotplug.checker.run import run_matrix

    seen = []
    small = Scenario(boot_cpus=1, max_cpus=2, plug=1, unplug=0)
    results = run_matrix(
        small,
        Limits(states=3000),
        workers=2,
        designs=["sdm", "dma-guard"],
        columns=["none", "os-code-at-default-smbase"],
        done=lambda res, finished, total: seen.append((res.design, tuple(res.attacks), finished, total)),
    )
    cells = [(r.design, tuple(r.attacks)) for r in results]
    assert cells == [
        ("sdm", ()),
        ("sdm", ("os-code-at-default-smbase",)),
        ("dma-guard", ()),
        ("dma-guard", ("os-code-at-default-smbase",)),
    ]
    assert sorted(s[:2] for s in seen) == sorted(cells)
    assert [s[2:] for s in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]


_ADDRESS_ELSEWHERE = """
import pickle, sys
from smm_hotplug.hw import memory
memory._code("a writer only this process has")  # this process numbers writers differently
from smm_hotplug.checker.content import Addresses
mem, cpus = pickle.loads(sys.stdin.buffer.read())
print(Addresses().memory(mem), Addresses().pieces(b"C", cpus))
"""


def test_content_addresses_are_the_same_in_another_process():
    """Workers name parts by content address: a RAM image (bytes, writers, objects) must get the
    same name in a process that numbers its writers differently."""
    import pickle
    import subprocess
    import sys

    from smm_hotplug.checker.content import Addresses

    system = CheckSetup("smram-default-smbase", Scenario(), ("concurrent-plug",)).system()
    m = simulate(system, seed=3).final.m
    here = Addresses()
    out = subprocess.run(
        [sys.executable, "-c", _ADDRESS_ELSEWHERE],
        input=pickle.dumps((m.mem, m.cpus)),
        capture_output=True,
        check=True,
    )
    assert out.stdout.decode().split() == [str(here.memory(m.mem)), str(here.pieces(b"C", m.cpus))]
    mem = m.mem
    assert here.memory(pickle.loads(pickle.dumps(mem))) == here.memory(mem)
