"""Timing shared by ``run.py`` and ``peer.py`` (stdlib only)."""
from __future__ import annotations

import statistics
import time


def side_by_side(fns, small: bool = False, rounds: int = 9, budget: float = 0.1) -> list[float]:
    """Median seconds per call of each of ``fns``, measured in alternating rounds (each
    round calls every function ``reps`` times, ``reps`` chosen so the first takes about
    ``budget`` seconds) so a burst of machine load hits all of them alike."""
    for fn in fns:          # warm-up
        fn()
    t0 = time.perf_counter()
    fns[0]()
    reps = 1 if small else max(1, int(budget / max(time.perf_counter() - t0, 1e-6)))
    rounds = 3 if small else rounds
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            ts.append((time.perf_counter() - t0) / reps)
    return [statistics.median(ts) for ts in times]


def op_count(graph_def, outputs=()) -> int:
    """Nodes of a GraphDef that the outputs (op names; all nodes if none given) depend on,
    counting the bodies of its functions (loops, conds) too. Nodes left unused by a
    conversion are pruned when the graph runs, so they are not counted."""
    nodes = {n.name: n for n in graph_def.node}
    seen, todo = set(), [o.split(":")[0] for o in outputs] or list(nodes)
    while todo:
        name = todo.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        todo.extend(i.lstrip("^").split(":")[0] for i in nodes[name].input)
    return len(seen) + sum(len(f.node_def) for f in graph_def.library.function)
