"""Open-set matching of a face descriptor against every enrolled one: one matrix product.

A face matches person P on list L when its best cosine similarity to P's descriptors reaches
L's threshold AND beats the best of every other person by L's margin. The margin is the
"not this person" answer closed-set systems lack: a face that looks a little like two enrolled
people matches neither. Descriptors are unit length, so the similarity to all N enrolled is
`E @ q`; with N = 10,000 that is one (10000×128)·(128) product (bench/face.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.video.face.store import Enrolment, ListPolicy


@dataclass(frozen=True, slots=True)
class Match:
    person: str
    list: str
    score: float
    runner_up: float  # the best score of any other person (-1 when there is none)


class Watchlist:
    """The enrolments of one descriptor model; others (enrolled before a change of model) are
    left out and counted in `other_model`: they would match nothing, or the wrong person."""

    def __init__(self, enrolments: list[Enrolment], lists: dict[str, ListPolicy],
                 model: str) -> None:
        usable = [e for e in enrolments if e.list in lists and e.model == model]
        self.other_model = sum(1 for e in enrolments if e.model != model)
        rows = [(e, v) for e in usable for v in e.embeddings]
        self.lists = lists
        width = len(rows[0][1]) if rows else 1
        self.matrix = np.array([v for _, v in rows], np.float32).reshape(-1, width)
        norms = np.linalg.norm(self.matrix, axis=1, keepdims=True)
        self.matrix /= np.maximum(norms, 1e-9)
        people = sorted({e.person for e, _ in rows})
        index = {p: i for i, p in enumerate(people)}
        self.people = people
        self.row_person = np.array([index[e.person] for e, _ in rows], np.int64)
        self.row_list = [e.list for e, _ in rows]

    def __len__(self) -> int:
        return len(self.matrix)

    def scores(self, descriptor: np.ndarray) -> np.ndarray:
        result: np.ndarray = self.matrix @ descriptor
        return result

    def match(self, descriptor: np.ndarray) -> Match | None:
        """The enrolled person this unit descriptor is, or None (nobody, or too close to call)."""
        if not len(self.matrix):
            return None
        scores = self.scores(descriptor)
        best = int(np.argmax(scores))
        person = self.row_person[best]
        others = scores[self.row_person != person]
        runner_up = float(others.max()) if others.size else -1.0
        score = float(scores[best])
        policy = self.lists[self.row_list[best]]
        if score < policy.threshold or score - runner_up < policy.margin:
            return None
        return Match(self.people[person], self.row_list[best], score, runner_up)
