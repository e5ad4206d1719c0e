"""
Quickstart: votes in, certified predictions out
===============================================

Digits with three simulated annotators (hard images get more disagreement).
We turn the votes into per-example budgets, fit a CNAT ridge head on the
pixels (features that never saw the labels, so certificates cover the whole
model), and certify the test predictions in the three tiers.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.datasets import load_digits_votes
from sklearn_cnat.display import CoverageDisplay

SMALL = os.environ.get("CNAT_EXAMPLES_SMALL") == "1"  # the test suite runs examples small

data = load_digits_votes(random_state=0)
X, votes, clean = data.data, data.votes, data.target
if SMALL:
    X, votes, clean = X[:600], votes[:600], clean[:600]
X_train, X_test, v_train, v_test, _, y_test = train_test_split(X, votes, clean, test_size=0.3, random_state=0)

clf = CNATClassifier(
    head="ridge", alpha=10.0,
    budget=NoiseBudgetTransformer(pi="votes", mapping="flat", radius=0.05),
)
clf.fit(X_train, v_train)
print(f"accuracy on clean test labels: {clf.score(X_test, y_test):.3f}")

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, (tier, kw) in zip(axes, [("stochastic", {"delta": 0.05}), ("bounded", {}), ("flip", {"m": 1})]):
    cert = clf.certify(X_test, tier=tier, **kw)
    print(f"tier {tier:10s}: coverage {cert.coverage:.3f}, "
          f"certified accuracy {cert.certified_accuracy(y_test):.3f}, scope {cert.scope}")
    CoverageDisplay.from_certificate(cert, y_test, name="CNAT ridge", ax=ax)
fig.tight_layout()
if not SMALL:
    plt.show()
print("median certified flips:", np.median(clf.certify(X_test, tier="flip", m=1).max_flips))
