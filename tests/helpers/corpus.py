"""A small synthetic English-like corpus for tests that run the real stages."""

from __future__ import annotations

import random
from pathlib import Path


def synthetic_corpus(path: Path, num_docs: int = 400, seed: int = 0) -> Path:
    """A small deterministic English-like corpus with learnable structure (templated sentences)."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the bird", "a young girl", "the teacher"]
    verbs = ["sees", "likes", "follows", "paints", "finds", "helps", "watches"]
    objects = ["the red ball", "a green tree", "the small house", "a blue car", "the tall tower", "an apple"]
    places = ["in the park", "near the river", "at school", "in the garden", "on the hill"]
    lines = []
    for _ in range(num_docs):
        sentences = [
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(places)} ."
            for _ in range(rng.randint(2, 6))
        ]
        lines.append(" ".join(sentences))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
