"""Find which images are augmented copies of one source cell, from the pixels alone.

The Kaggle set made ~36 copies of each original by rotation (<= 20 deg), shifts, shear and
flips, and the filenames do not say which original a copy came from. Copies of one source must
stay on one side of a split, so we group them:

1. ORB keypoints on each image and on its mirror image (ORB is rotation-invariant, so a
   vertical flip -- a mirror plus a 180 deg turn -- is covered too); the black fill left by the
   rotation is masked out so its corners do not match between unrelated images.
2. Leader clustering within each class: a new image is compared with one exemplar per known
   group. Candidate exemplars are ranked by descriptor votes (cheap), and the best few are
   verified by RANSAC on a similarity transform (the geometric check). Enough inliers joins the
   group; verifying against several groups merges them (union-find), so a group split early is
   healed later; no match starts a new group.

Unrelated smear fields share no geometrically consistent keypoints, so the inlier counts
separate cleanly (measured on the official TEST split against its originals: matches >= 45
inliers, non-matches <= 8).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

MIN_INLIERS = 20
VOTE_DISTANCE = 48  # Hamming distance (of 256 bits) below which a descriptor votes
CANDIDATES = 3
VOTERS = 128  # strongest keypoints per image used for the cheap candidate vote
MAX_EXEMPLARS = 3  # per group: a weakly matching member widens the net, up to this many


@dataclass
class Features:
    variants: list[tuple[np.ndarray, np.ndarray]]  # [(points Nx2, descriptors Nx32)] plain, mirrored


def image_features(image_bgr: np.ndarray, n_features: int = 400) -> Features:
    orb = cv2.ORB_create(nfeatures=n_features, fastThreshold=10)
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    mask = cv2.erode((gray > 20).astype(np.uint8) * 255, np.ones((15, 15), np.uint8))
    variants = []
    for g, m in ((gray, mask), (np.ascontiguousarray(gray[:, ::-1]), np.ascontiguousarray(mask[:, ::-1]))):
        kp, desc = orb.detectAndCompute(g, m)
        order = np.argsort([-k.response for k in kp])  # strongest first: the vote uses the head
        pts = np.float32([kp[i].pt for i in order]).reshape(-1, 2)
        desc = desc[order] if desc is not None else np.zeros((0, 32), np.uint8)
        variants.append((pts, desc))
    return Features(variants)


def file_features(path) -> Features | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else image_features(img)


def inliers(query: Features, ref: Features, matcher=None, variants=(0, 1)) -> int:
    """Most RANSAC inliers between query (as is) and ref (as is or mirrored)."""
    matcher = matcher or cv2.BFMatcher(cv2.NORM_HAMMING)
    pa, da = query.variants[0]
    best = 0
    for pb, db in (ref.variants[v] for v in variants):
        if len(da) < 8 or len(db) < 8:
            continue
        pairs = [p for p in matcher.knnMatch(da, db, k=2) if len(p) == 2]
        good = [m for m, n in pairs if m.distance < 0.8 * n.distance]
        if len(good) < 6:
            continue
        src = pa[[m.queryIdx for m in good]]
        dst = pb[[m.trainIdx for m in good]]
        _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=6.0)
        if mask is not None:
            best = max(best, int(mask.sum()))
    return best


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _candidates(matcher, query: np.ndarray, bank: np.ndarray, owner: np.ndarray, n: int) -> list[tuple[int, int]]:
    """(exemplar, variant) pairs ranked by descriptor votes, best first; only those with votes."""
    if not len(bank) or not len(query):
        return []
    nearest = matcher.match(query, bank)
    votes = np.bincount([owner[m.trainIdx] for m in nearest if m.distance < VOTE_DISTANCE], minlength=owner.max() + 1)
    ranked = [int(ev) for ev in np.argsort(-votes)[:n] if votes[ev] >= 3]
    return [divmod(ev, 2) for ev in ranked]


def cluster(features: list[Features], min_inliers: int = MIN_INLIERS, on_step=None) -> list[int]:
    """Group ids (0..G-1, in order of first appearance) for a list of images of one class."""
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    uf = _UnionFind()
    exemplars: list[tuple[int, Features]] = []  # (union-find node, features)
    bank = np.zeros((0, 32), np.uint8)  # the strongest descriptors of every exemplar, both variants
    owner = np.zeros(0, np.int64)  # 2 * exemplar index + variant, for each bank row

    def add_exemplar(node: int, feat: Features) -> None:
        nonlocal bank, owner
        exemplars.append((node, feat))
        for v, (_, desc) in enumerate(feat.variants):
            bank = np.vstack([bank, desc[:VOTERS]])
            owner = np.concatenate([owner, np.full(len(desc[:VOTERS]), 2 * (len(exemplars) - 1) + v)])

    node_of_image: list[int] = []
    size: dict[int, int] = {}  # exemplars per group root
    for feat in features:
        joined: list[tuple[int, int]] = []  # (node, inliers)
        for e, variant in _candidates(matcher, feat.variants[0][1][:VOTERS], bank, owner, CANDIDATES):
            if any(uf.find(exemplars[e][0]) == uf.find(n) for n, _ in joined):
                continue
            k = inliers(feat, exemplars[e][1], matcher, (variant,))
            if k >= min_inliers:
                joined.append((exemplars[e][0], k))
        if joined:
            node = joined[0][0]
            for other, _ in joined[1:]:
                uf.union(node, other)
            if max(k for _, k in joined) < 2 * min_inliers and size[uf.find(node)] < MAX_EXEMPLARS:
                size[uf.find(node)] += 1  # a weak match: widen the group's net
                add_exemplar(node, feat)
        else:
            node = uf.add()
            size[node] = 1
            add_exemplar(node, feat)
        node_of_image.append(node)
        if on_step:
            on_step()
    # heal groups split early: each exemplar against the others, now that all exist
    for i, (node, feat) in enumerate(exemplars):
        for e, variant in _candidates(matcher, feat.variants[0][1][:VOTERS], bank, owner, CANDIDATES + 2):
            if e != i and uf.find(exemplars[e][0]) != uf.find(node):
                if inliers(feat, exemplars[e][1], matcher, (variant,)) >= min_inliers:
                    uf.union(node, exemplars[e][0])
    roots = [uf.find(n) for n in node_of_image]
    renum: dict[int, int] = {}
    return [renum.setdefault(r, len(renum)) for r in roots]


def group_images(paths: list, labels: list[str], progress=None) -> list[str]:
    """Group names like 'NEUTROPHIL-0042' for each image; groups never cross classes."""
    n = len(paths)
    task = progress.add_task("keypoints", total=n) if progress else None
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        feats = []
        for f in pool.map(file_features, paths):
            feats.append(f or Features([(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))] * 2))
            if progress:
                progress.advance(task)
    out = [""] * n
    task = progress.add_task("grouping", total=n) if progress else None
    step = (lambda: progress.advance(task)) if progress else None
    for label in sorted(set(labels)):
        idx = [i for i in range(n) if labels[i] == label]
        ids = cluster([feats[i] for i in idx], on_step=step)
        for i, g in zip(idx, ids):
            out[i] = f"{label}-{g:04d}"
    return out
