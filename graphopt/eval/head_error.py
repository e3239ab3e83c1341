"""Detection-relevant error of a model's raw head against a reference on the same inputs: what the
lossy passes (quantize's budget, prune's sensitivity) measure when no labeled data is given."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt.core.compare import cosine


@dataclass
class HeadError:
    """Detection-relevant error of a candidate vs the float model on the same inputs."""

    score_error: float  # mean |Δ best class score| over anchors the float model finds confident
    box_error_px: float  # mean |Δ xywh| (pixels) over the same anchors
    cosine: float  # cosine similarity of the whole output

    def as_dict(self) -> dict[str, float]:
        return {"score_error": self.score_error, "box_error_px": self.box_error_px, "cosine": self.cosine}


def head_error(
    reference: list[np.ndarray], candidate: list[np.ndarray], head: str, confident: float = 0.05
) -> HeadError:
    from runtime.decode import head_arrays

    score_d, box_d = [], []
    for ref, cand in zip(reference, candidate, strict=True):
        rb, rs = head_arrays(ref, head)
        cb, cs = head_arrays(cand, head)
        best = rs.max(1)
        mask = best > confident
        if not mask.any():
            mask = best >= np.sort(best)[-min(100, len(best))]  # no confident anchor: the top ones
        score_d.append(np.abs(cs[mask].max(1) - best[mask]))
        box_d.append(np.abs(cb[mask] - rb[mask]).mean(1))
    return HeadError(
        float(np.concatenate(score_d).mean()), float(np.concatenate(box_d).mean()), cosine(reference, candidate)
    )
