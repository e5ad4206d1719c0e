"""
From a folder of images and a crowd export to certificates and a relabel list
=============================================================================

The data as a user has it: image files in class folders, and the crowd platform's
export, one row per vote (``image, annotator, label``), in the platform's order.
We read both, tie the votes to the files by name, fit a certified ridge head on the
pixels inside a pipeline, certify the test images in the three tiers, and write the
training images that most deserve extra votes, by file name.

The images are made up here (small coloured squares with noise) so that the example
runs anywhere; point ``ROOT`` at your own folder and CSV instead.
"""

import csv
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import FunctionTransformer

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.datasets import load_image_folder
from sklearn_cnat.display import CoverageDisplay
from sklearn_cnat.evidence import read_evidence
from sklearn_cnat.pipeline import make_pipeline
from sklearn_cnat.relabel import suggest_relabels

SMALL = os.environ.get("CNAT_EXAMPLES_SMALL") == "1"  # the test suite runs examples small
ROOT = Path(tempfile.mkdtemp(prefix="cnat_crowd_"))
CLASSES = ["cat", "dog", "frog"]
N_PER_CLASS = 30 if SMALL else 100

# ---- make a folder of images and a crowd export (stand-ins for your files)
rng = np.random.default_rng(0)
votes = []
for k, name in enumerate(CLASSES):
    (ROOT / "images" / name).mkdir(parents=True)
    for j in range(N_PER_CLASS):
        pixels = rng.integers(0, 90, size=(12, 12, 3)).astype(np.uint8)
        pixels[..., k] += int(rng.integers(40, 140))  # some images are faint, hence hard
        file = f"{name}_{j:03d}.png"
        Image.fromarray(pixels).save(ROOT / "images" / name / file)
        for worker in rng.choice(8, size=int(rng.integers(1, 5)), replace=False):  # 1 to 4 votes per image
            said = k if rng.random() < 0.75 else int(rng.integers(0, 3))
            votes.append((file, f"worker{worker}", CLASSES[said]))
votes = [votes[i] for i in rng.permutation(len(votes))]  # the platform's order, not the folder's
with (ROOT / "crowd.csv").open("w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(["image", "annotator", "label"])
    writer.writerows(votes)

# ---- read them: images with their names, votes ordered by those names
images = load_image_folder(ROOT / "images")
evidence = read_evidence(ROOT / "crowd.csv", classes=images.target_names).align(images.names, what="images")
print(f"{len(images.names)} images, {len(votes)} votes from {len(evidence.annotators)} annotators; "
      f"classes {evidence.classes.tolist()}")

idx_train, idx_test = train_test_split(np.arange(len(evidence)), test_size=0.3, random_state=0,
                                       stratify=evidence.plurality)
X, counts, names = images.images, evidence.counts, images.names

# ---- a certified ridge head on the pixels, in a pipeline (the flattening never sees the labels)
pipe = make_pipeline(
    FunctionTransformer(lambda x: x.reshape(len(x), -1) / 255.0),
    CNATClassifier(head="ridge", alpha=10.0,
                   budget=NoiseBudgetTransformer(evidence="counts", classes=evidence.classes, pi="votes",
                                                 radius=0.05)),
)
pipe.fit(X[idx_train], counts[idx_train])
truth = evidence.classes[evidence.plurality[idx_test]]  # the test images' plurality vote
print(f"accuracy against the test images' plurality vote: {np.mean(pipe.predict(X[idx_test]) == truth):.3f}")

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, (tier, kw) in zip(axes, [("stochastic", {"delta": 0.05}), ("bounded", {}), ("flip", {"m": 1})]):
    cert = pipe.certify(X[idx_test], tier=tier, **kw)
    print(cert)
    CoverageDisplay.from_certificate(cert, truth, name="CNAT ridge", ax=ax)
fig.tight_layout()
if not SMALL:
    plt.show()

# ---- which training images deserve more votes, by file name
ranking = suggest_relabels(pipe[-1], pipe[:-1].transform(X[idx_test]), n=10, k=2)
ranking.insert(0, "file", names[idx_train][ranking["index"].to_numpy()])
ranking.to_csv(ROOT / "relabel_priority.csv", index=False)
print(ranking[["file", "coverage_gain", "n_votes", "plurality", "disagreement"]].head())
print(f"wrote {ROOT / 'relabel_priority.csv'}")
if SMALL:
    shutil.rmtree(ROOT)  # the test suite leaves nothing behind
