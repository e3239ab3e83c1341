"""Which lossy stages `compile` deploys (graphopt.compile.deploy): only those that pay, within budget."""

from __future__ import annotations

from graphopt.compile.deploy import MIN_GAIN, Candidate, decide

CHAIN = [
    Candidate("export", None, False, 0.40),
    Candidate("lossless", "export", False, 0.40),
    Candidate("prune", "lossless", True, 0.38),
    Candidate("int8", "prune", True, 0.37),
]


def test_a_lossy_stage_that_is_not_faster_than_its_parent_is_not_deployed() -> None:
    last, decisions = decide(CHAIN, {"prune": 1.2, "int8": 0.97}, "on this host", None, False)
    assert last == "prune"
    assert [(d.stage, d.deployed) for d in decisions] == [("prune", True), ("int8", False)]
    assert decisions[1].reason == "0.97× of prune on this host — deployed prune"


def test_within_noise_is_not_paying() -> None:
    last, _ = decide(CHAIN, {"prune": MIN_GAIN - 0.001, "int8": 2.0}, "on this host", None, False)
    assert last == "lossless"  # int8 was made from the pruned model, so it goes too


def test_a_stage_made_from_one_that_is_not_deployed_is_not_deployed() -> None:
    _, decisions = decide(CHAIN, {"prune": 0.9, "int8": 3.0}, "on this host", None, False)
    assert decisions[1].deployed is False and "made from 'prune', which is not deployed" in decisions[1].reason


def test_the_budget_bounds_the_loss_against_the_model_as_trained() -> None:
    last, decisions = decide(CHAIN, {"prune": 1.3, "int8": 1.5}, "on this host", 2.5, False)
    assert last == "prune"  # int8 loses 3 points against export's 0.40
    assert decisions[1].loss_points == 3.0 and "over the budget of 2.5" in decisions[1].reason
    assert decide(CHAIN, {"prune": 1.3, "int8": 1.5}, "on this host", 3.0, False)[0] == "int8"


def test_without_the_targets_clock_the_targets_rule_stands() -> None:
    last, decisions = decide(CHAIN, None, "(this x86 host's clock does not judge the Pi's speed)", None, False)
    assert last == "int8" and all(d.deployed and d.speed is None for d in decisions)
    assert "deployed by the target's rule" in decisions[0].reason


def test_keep_lossy_deploys_every_lossy_stage() -> None:
    last, decisions = decide(CHAIN, {"prune": 0.5, "int8": 0.5}, "on this host", None, True)
    assert last == "int8" and all(d.reason == "--keep-lossy" for d in decisions)


def test_a_chain_without_lossy_stages_deploys_its_end() -> None:
    assert decide(CHAIN[:2], {}, "on this host", None, False) == ("lossless", [])
