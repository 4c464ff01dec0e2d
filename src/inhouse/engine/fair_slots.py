"""Fair share of serving slots between groups: which waiting request takes the next slot.

A pure function of who holds slots and who waits. The groups are opaque names (the
gateway passes tenants). The rules, together:

* **Priority first.** A waiting request of a higher class goes before any of a lower one.
* **A cap while others wait.** A group never takes a slot that would bring it above
  ``share_cap(slots, max_share)`` while another group has a request waiting.
* **Work-conserving.** A group that is alone in the waiting line may take every slot.
* **Weighted fair order.** Within a class, the group holding the fewest slots per unit of
  weight goes first; ties go to the request that arrived first.

``targets`` says what each group should hold for a given demand; an engine that can take
slots back (the local engine, by preemption) sheds what a group holds above it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def share_cap(slots: int, max_share: float) -> int:
    """The most slots one group holds while others wait: ``max_share`` of them, rounded
    down, and at least one (a group must be able to run at all)."""
    return max(1, math.floor(max_share * slots + 1e-9))


@dataclass(frozen=True, slots=True)
class Head:
    """The first waiting request of one group."""

    group: str
    priority: int
    """Lower is served first."""
    arrival: int
    """Lower arrived first."""
    weight: float = 1.0


def next_head(heads: Iterable[Head], held: Mapping[str, int], cap: int) -> Head | None:
    """The head whose request takes the next free slot, or None when every waiting group
    is at its cap while another waits. ``held``: slots each group holds now."""
    heads = list(heads)
    alone = len(heads) == 1
    eligible = [h for h in heads if alone or held.get(h.group, 0) < cap]
    if not eligible:
        return None
    return min(eligible, key=lambda h: (h.priority, held.get(h.group, 0) / h.weight, h.arrival))


def targets(demand: Mapping[str, int], slots: int, cap: int) -> dict[str, int]:
    """The slots each group should hold, given what it asks for (running plus waiting):
    up to the cap each; what is left goes to a group only when it is the one group still
    asking for more (otherwise it stays free, as the cap holds while others wait)."""
    target = {group: min(asked, cap) for group, asked in demand.items()}
    unmet = [group for group, asked in demand.items() if asked > target[group]]
    if len(unmet) == 1:
        group = unmet[0]
        left = max(0, slots - sum(target.values()))
        target[group] = min(demand[group], target[group] + left)
    return target
