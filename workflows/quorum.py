"""Quorum: which approvers count toward which requirement, each person counting once.

A person in both `dba` and `security` cannot satisfy a "1 of dba and 1 of security" rule alone:
that is the two-person rule. Counting is a bipartite matching of approvers to requirement slots.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from signoff.models import ApprovalRequirement


def assign_approvers(
    requirements: list[ApprovalRequirement],
    approvers: Mapping[str, Iterable[str]],
    widened: Iterable[str] = (),
) -> list[list[str]]:
    """Assign approvers (id -> groups, in decision order) to requirements; one slot each.

    An approver fits a requirement when they are in its group, or in a group an escalation
    stage added (`widened`), which may stand in for any requirement.
    """
    extra = set(widened)
    slots = [i for i, r in enumerate(requirements) for _ in range(r.min)]
    holder: list[str | None] = [None] * len(slots)
    groups = {a: set(g) for a, g in approvers.items()}

    def fits(approver: str, requirement: int) -> bool:
        mine = groups[approver]
        return requirements[requirement].group in mine or bool(mine & extra)

    def place(approver: str, seen: set[int]) -> bool:
        # Kuhn's augmenting path: take a free slot, or move its holder to another one.
        for s, requirement in enumerate(slots):
            if s in seen or not fits(approver, requirement):
                continue
            seen.add(s)
            current = holder[s]
            if current is None or place(current, seen):
                holder[s] = approver
                return True
        return False

    for approver in approvers:
        place(approver, set())

    order = {a: i for i, a in enumerate(approvers)}
    assigned: list[list[str]] = [[] for _ in requirements]
    for s, requirement in enumerate(slots):
        if (who := holder[s]) is not None:
            assigned[requirement].append(who)
    return [sorted(a, key=order.__getitem__) for a in assigned]
