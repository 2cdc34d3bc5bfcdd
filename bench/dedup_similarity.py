"""Cosine similarity of same-fact pairs against near misses, per embedding model (docs/dedup.md).

.venv/bin/python bench/dedup_similarity.py wordllama-l2-supercat-256 [all-minilm-l6-v2]
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memory_service.embedding.loading import load_model

SAME = [  # the same fact, reworded (should merge)
    (
        "Prefers bullet points over long paragraphs when she reads suggestions between classes.",
        "Prefers bullet points rather than long paragraphs when reading suggestions"
        " between classes.",
    ),
    ("Her class has 28 pupils this year.", "This year her class has 28 pupils."),
    ("Teaches year 7 maths on Monday mornings.", "Teaches Year 7 math on Monday mornings."),
    (
        "Wants feedback to open with one specific strength.",
        "Wants feedback to start with one specific strength.",
    ),
    (
        "Jayden sits at the front left table away from the door.",
        "Jayden sits at the front-left table, away from the door.",
    ),
    (
        "Likes fractions taught with pizza diagrams.",
        "Likes teaching fractions with pizza diagrams.",
    ),
    ("Uses Google Classroom for homework.", "Homework goes through Google Classroom."),
    ("Is allergic to peanuts.", "Has a peanut allergy."),
]
DIFFERENT = [  # one number, name or polarity differs (must not merge)
    ("Her class has 28 pupils this year.", "Her class has 29 pupils this year."),
    ("Teaches year 7 maths on Monday mornings.", "Teaches year 8 maths on Monday mornings."),
    ("Teaches year 7 maths on Monday mornings.", "Teaches year 7 maths on Tuesday mornings."),
    (
        "Jayden sits at the front left table away from the door.",
        "Maya sits at the front left table away from the door.",
    ),
    (
        "Likes fractions taught with pizza diagrams.",
        "Dislikes fractions taught with pizza diagrams.",
    ),
    ("The unit test on fractions is on March 3.", "The unit test on fractions is on March 13."),
    ("Prefers bullet points over long paragraphs.", "Prefers long paragraphs over bullet points."),
    ("Uses Google Classroom for homework.", "Uses Google Classroom for quizzes."),
]


def cos(model, a, b):
    v = np.asarray(model.embed([a, b]), dtype=float)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return float(v[0] @ v[1])


for name in sys.argv[1:]:
    model = load_model(name)
    same = [cos(model, a, b) for a, b in SAME]
    diff = [cos(model, a, b) for a, b in DIFFERENT]
    print(name)
    print(
        "  same fact  :",
        " ".join(f"{x:.3f}" for x in same),
        f"min {min(same):.3f} median {np.median(same):.3f}",
    )
    print(
        "  near miss  :",
        " ".join(f"{x:.3f}" for x in diff),
        f"max {max(diff):.3f} median {np.median(diff):.3f}",
    )
    for t in (0.9, 0.95, 0.97, 0.98, 0.99):
        merged_same, merged_diff = sum(x >= t for x in same), sum(x >= t for x in diff)
        print(
            f"  >= {t}: merges {merged_same}/{len(same)} same, {merged_diff}/{len(diff)} near-miss"
        )
