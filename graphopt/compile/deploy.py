"""Which lossy stages `compile` deploys: only those that pay on the target, within the budget.

Each lossy stage (prune, int8) is judged against the stage it was made from, in the same
interleaved timing run: it is deployed when it is at least `MIN_GAIN` times as fast and its mAP50-95
loss against the model as trained (when measured) fits `--budget`; otherwise the deployed chain stops at its parent — a stage
made from a stage that was not deployed is not deployed either. Speed is judged only where a
figure speaks for the target: this host's clock when it is of the target's kind (and not emulated),
else no speed judgement is possible and the target's rule stands (recorded as such).
`--keep-lossy` deploys every lossy stage regardless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

# A lossy stage has to buy something: within noise of its parent it is not worth its loss.
MIN_GAIN = 1.03


@dataclass(frozen=True)
class Candidate:
    """A stage of the chain as the decision sees it."""

    name: str
    parent: str | None  # the stage it was made from (None: the first)
    lossy: bool
    map50_95: float | None = None


@dataclass
class Decision:
    stage: str
    parent: str
    deployed: bool
    speed: float | None  # the stage's speed relative to its parent (×, >1 is faster); None: not judged
    loss_points: float | None  # mAP50-95 points lost against the model as trained; None: not measured
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def decide(
    chain: Sequence[Candidate],
    speed_vs_parent: dict[str, float] | None,
    judged_by: str,
    budget: float | None,
    keep_lossy: bool,
) -> tuple[str, list[Decision]]:
    """The stage to deploy (the end of the chain's deployed prefix) and one decision per lossy stage.

    `speed_vs_parent[name]` is a stage's speed over its parent's in one run; None when no figure
    speaks for the target (`judged_by` then says why and the lossy stages are kept, as the target's
    rule wants).
    """
    reference = chain[0]  # the model as trained: the budget bounds the loss against it
    deployed: dict[str, bool] = {}
    decisions: list[Decision] = []
    for c in chain:
        if c.parent is None:
            deployed[c.name] = True
            continue
        if not deployed[c.parent]:
            deployed[c.name] = False
            if c.lossy:
                decisions.append(
                    Decision(c.name, c.parent, False, None, None, f"made from '{c.parent}', which is not deployed")
                )
            continue
        if not c.lossy:
            deployed[c.name] = True
            continue
        loss = (
            None
            if c.map50_95 is None or reference.map50_95 is None
            else round(100.0 * (reference.map50_95 - c.map50_95), 2)
        )
        speed = None if speed_vs_parent is None else speed_vs_parent.get(c.name)
        over_budget = budget is not None and loss is not None and loss > budget
        if keep_lossy:
            ok, reason = True, "--keep-lossy"
        elif speed is None:
            ok, reason = True, f"deployed by the target's rule — {judged_by}"
        elif speed < MIN_GAIN:
            ok, reason = False, f"{speed:.2f}× of {c.parent} {judged_by} — deployed {c.parent}"
        elif over_budget:
            ok, reason = False, f"loses {loss:.2f} points, over the budget of {budget:g} — deployed {c.parent}"
        else:
            ok, reason = True, f"{speed:.2f}× of {c.parent} {judged_by}"
        deployed[c.name] = ok
        decisions.append(Decision(c.name, c.parent, ok, speed, loss, reason))
    last = next(c.name for c in reversed(chain) if deployed[c.name])
    return last, decisions
