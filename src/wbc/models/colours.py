"""How far a view's colours lie from every training source's: one Gaussian per source over the 15 L*a*b* numbers of
`wbc.image.stain.view_colours`, the distance to the nearest one.

The features' distance (wbc.models.openset) is blind to a lab's stain and light: the network was trained to answer
through colour changes, so another lab's cells look like known types to it, and it answers them as surely and more
often wrongly (PBC's cells moved into labs drawn from the sources' span: 81-92% of the unflagged answers right,
docs/results.md). One cell's colours say little (a home smear's odd cell), a run's say much: the share of a run's
cells beyond `limit` is what `wbc.infer.predictor.LabCheck` judges. The statistics are plain numbers in the model's
spec, so they travel in the model file and its ONNX export alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ColourCheck:
    """The spec's colour statistics as arrays, read once per loaded model (a distance costs one 15 x 15 product a source)."""

    names: list[str]  # a source a Gaussian each (an adapted lab's own colours among them: `wbc adapt`)
    means: np.ndarray  # S x 15
    precisions: np.ndarray  # S x 15 x 15
    limit: float  # beyond this distance a view's colours are unlike every source's
    val_share: float  # the share of the model's own validation views beyond it
    recheck: float | None = None  # beyond this distance a sure answer is asked again in each source's colours (None: never)

    @classmethod
    def from_spec(cls, colours: dict) -> "ColourCheck | None":
        """The spec's `colours` entry (None: the model holds no colour statistics: a file made before them)."""
        if not colours or not colours.get("sources"):
            return None
        src = colours["sources"]
        return cls(list(src), np.array([s["mean"] for s in src.values()], np.float64),
                   np.array([s["precision"] for s in src.values()], np.float64), float(colours["limit"]),
                   float(colours.get("val_share", 0.005)), colours.get("recheck"))

    def targets(self) -> list[tuple[float, ...]]:
        """Each source's mean view colours as a Reinhard target (its L*a*b* means and spreads: the first 6 numbers)."""
        return [tuple(float(v) for v in m[:6]) for m in self.means]

    def asks_again(self, distance: float | None) -> bool:
        """A view this far (None: not measured) lies beyond `recheck`: a sure answer on it is asked again in each source's
        colours (wbc.infer.predictor.needs_recheck)."""
        return bool(self.recheck) and distance is not None and distance > self.recheck

    def distance(self, colours: np.ndarray) -> float:
        """Root-mean-square over the 15 whitened numbers to the nearest source: about 1 for a typical view of it."""
        z = colours[None] - self.means
        d2 = np.einsum("si,sij,sj->s", z, self.precisions, z) / z.shape[1]
        return float(np.sqrt(max(float(d2.min()), 0.0)))


def gaussian(views: np.ndarray) -> dict:
    """{"mean", "precision"} of one source's view colours (N x 15), as JSON-ready lists. The correlations are shrunk
    (Ledoit-Wolf, on the standardised numbers): an adapted lab gives a few dozen views for 120 of them."""
    from sklearn.covariance import LedoitWolf

    sd = np.maximum(views.std(0), MIN_SPREAD)
    corr = LedoitWolf().fit(views / sd).covariance_
    return {"mean": np.round(views.mean(0), 4).tolist(), "precision": np.linalg.inv(corr * np.outer(sd, sd)).round(8).tolist()}


MIN_SPREAD = 0.5  # L*a*b* units: a number that does not vary over a source's views is still not known to the digit


RECHECK_QUANTILE = 0.95  # of the training views' distances (1.23 for the shipped model): beyond it a sure answer is asked
# again in each source's colours. Chosen on validation cells, one at a time, under drawn labs and shifts (docs/results.md,
# session 24): at 1.0 half of Kaggle's sure home answers pay three more passes for no more caught; at 1.4 PBC in lab 1
# keeps 97.6% of its unflagged answers right (98.3% at 1.2)


MIN_VIEWS = 20  # a source (or an adapted lab) with fewer views gets no Gaussian: too few for 120 numbers, even shrunk


def fit_colours(views: dict[str, np.ndarray], val: np.ndarray | None, quantile: float) -> dict:
    """The spec's `colours` entry from each source's training views (un-augmented, what inference sees): a Gaussian
    each, the limit at `quantile` of the training views' own distances, the distance beyond which a sure answer is asked
    again (`recheck`, at RECHECK_QUANTILE of them), and the share of validation views beyond the limit.
    {} (no colour check) when no source has MIN_VIEWS views."""
    views = {name: v for name, v in views.items() if len(v) >= MIN_VIEWS}
    if not views:
        return {}
    out = {"sources": {name: gaussian(v) for name, v in views.items()}, "limit": 0.0, "val_share": 0.0}
    check = ColourCheck.from_spec(out)
    own = [check.distance(x) for v in views.values() for x in v]
    check.limit = float(np.quantile(own, quantile))
    out["limit"], out["recheck"] = round(check.limit, 4), round(float(np.quantile(own, RECHECK_QUANTILE)), 4)
    if val is not None and len(val):
        out["val_share"] = float(np.mean([check.distance(x) > check.limit for x in val]))
    return out


def with_lab(colours: dict, name: str, views: np.ndarray) -> dict:
    """`colours` with a lab's own Gaussian added (`wbc adapt`): its stain and light are no longer unlike the model's.
    Unchanged with fewer than MIN_VIEWS views."""
    if not colours or len(views) < MIN_VIEWS:
        return colours
    return colours | {"sources": colours["sources"] | {name: gaussian(views)}}
