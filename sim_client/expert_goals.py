"""What the scripted expert is asked to do: a LIBERO task's BDDL goal as pick-and-places.

`(:goal (And (In a r) (On b c)))` becomes `[PickPlace('in', 'a', 'r'), PickPlace('on', 'b', 'c')]`;
a goal with any other predicate (open, close, turn on, ...) is refused with `ExpertUnsupported`
naming the task, before any worker starts (`check_tasks`). `sim_client.expert` executes the plan.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sim_client.errors import SimClientError

SUPPORTED = ("in", "on")


class ExpertUnsupported(SimClientError):
    """The expert has no primitive for this task's goal."""


@dataclass(frozen=True)
class PickPlace:
    relation: str   # "in" | "on" (the BDDL predicate)
    obj: str        # movable object to carry
    target: str     # object or region (site) name it goes in / on


def _sexpr(text: str):
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    pos = 0

    def parse():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok != "(":
            return tok
        out = []
        while tokens[pos] != ")":
            out.append(parse())
        pos += 1
        return out

    return parse()


def goal_predicates(bddl_text: str) -> list[list[str]]:
    """The goal's atoms, lower-cased: `(:goal (And (In a r) (On b c)))` → [['in','a','r'], ['on','b','c']]."""
    start = bddl_text.find("(:goal")
    if start < 0:
        raise SimClientError("BDDL problem has no (:goal ...) section")
    depth, end = 0, start
    for end in range(start, len(bddl_text)):
        depth += {"(": 1, ")": -1}.get(bddl_text[end], 0)
        if depth == 0:
            break
    goal = _sexpr(bddl_text[start:end + 1])[1]
    atoms: list[list[str]] = []

    def walk(node):
        if isinstance(node, list) and node and isinstance(node[0], str) and node[0].lower() == "and":
            for child in node[1:]:
                walk(child)
        elif isinstance(node, list):
            atoms.append([str(x).lower() if i == 0 else str(x) for i, x in enumerate(node)])
        else:
            atoms.append([str(node).lower()])

    walk(goal)
    return atoms


def plan_task(task) -> list[PickPlace]:
    """Pick-and-places for a `sim_client.suites.Task`, or ExpertUnsupported naming the task."""
    atoms = goal_predicates(Path(task.bddl_file).read_text())
    unsupported = [a for a in atoms if a[0] not in SUPPORTED or len(a) != 3]
    if unsupported:
        shown = ", ".join("(" + " ".join(a) + ")" for a in unsupported)
        raise ExpertUnsupported(f"the scripted expert does not cover {task.suite} task {task.task_id} "
                                f"({task.language!r}): goal {shown} is not a pick-and-place "
                                f"(it handles In/On goals only)")
    return [PickPlace(a[0], a[1], a[2]) for a in atoms]


def check_tasks(suite: str, task_ids) -> None:
    """Raise ExpertUnsupported for the first task of `task_ids` (None: all) the expert cannot do."""
    from sim_client.suites import get_tasks

    tasks = get_tasks(suite)
    for t in (range(len(tasks)) if task_ids is None else task_ids):
        plan_task(tasks[t])
