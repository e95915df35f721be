"""DN2's one-class protocol: each class in turn is "normal", the rest anomalous.

For a normal class c: fit on the training embeddings of class c only, score
every test embedding, label = (test class != c), ROC-AUC. Methods: exact kNN
(mean squared distance to the k nearest), the k-means index with C centres and
the greedy coreset of C vectors, optionally after unsupervised cleaning.
Features are global embeddings (N, D) or patch grids (N, h, w, D); a patch
grid scores as its worst location (``index_store.fitting.score``). Arrays in, results out; rendering as
Markdown (the paper's Tables 1 and 6) and JSON.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from index_store import fitting

# DN2 (Bergman, Cohen, Hoshen 2020), ResNet-101 ImageNet features, ROC-AUC %.
PAPER: dict[str, dict[str, Any]] = {
    "cifar10": {
        "per_class": [93.9, 97.7, 85.5, 85.5, 93.6, 91.3, 94.3, 93.6, 95.1, 95.3],
        "mean": 92.5,
        "methods": {"exact": 92.52, "C=1": 91.94, "C=3": 92.00, "C=5": 91.87, "C=10": 91.64},
    },
    "fashion-mnist": {"mean": 94.4},
    "cifar100": {"mean": 89.3},
}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; ``labels`` truthy = anomalous (positive), higher score = more anomalous.

    Mann-Whitney U from average ranks, so tied scores count one half.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.shape[0]} labels but {s.shape[0]} scores")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both normal and anomalous samples")
    ranks = average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties given the mean of the ranks they span: (N,) float64."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


@dataclass(frozen=True)
class Method:
    """One way of scoring: exact kNN, k-means with C centres (clusters), or a coreset of C vectors."""

    clusters: Optional[int] = None
    k: int = 2
    clean_fraction: float = 0.0
    coreset: Optional[int] = None

    @property
    def name(self) -> str:
        return self.config().label

    def config(self, seed: int = 0) -> fitting.FitConfig:
        return fitting.FitConfig(
            clusters=self.clusters,
            k=self.k,
            clean_fraction=self.clean_fraction,
            seed=seed,
            coreset=self.coreset,
        )


def methods_for(
    clusters: Sequence[int], k: int = 2, clean_fraction: float = 0.0, coresets: Sequence[int] = ()
) -> list[Method]:
    """Exact kNN first, then one k-means method per C, then one coreset method per C."""
    return (
        [Method(None, k, clean_fraction)]
        + [Method(c, k, clean_fraction) for c in clusters]
        + [Method(None, k, clean_fraction, coreset=c) for c in coresets]
    )


@dataclass
class ClassResult:
    index: int
    name: str
    n_train: int
    auc: dict[str, float] = field(default_factory=dict)  # method name -> ROC-AUC in [0, 1]
    fit_seconds: dict[str, float] = field(default_factory=dict)
    score_seconds: dict[str, float] = field(default_factory=dict)
    pixel_auc: dict[str, float] = field(default_factory=dict)  # MVTec-style: where masks exist


@dataclass
class FeatureResult:
    """All classes, all methods, for one kind of feature (a backbone, or raw pixels)."""

    features: str
    methods: list[str]
    classes: list[ClassResult]

    def mean(self, method: str) -> float:
        return float(np.mean([c.auc[method] for c in self.classes]))

    def mean_pixel(self, method: str) -> Optional[float]:
        values = [c.pixel_auc[method] for c in self.classes if method in c.pixel_auc]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "features": self.features,
            "methods": self.methods,
            "mean_auc": {m: self.mean(m) for m in self.methods},
            "per_class": [asdict(c) for c in self.classes],
        }
        if any(c.pixel_auc for c in self.classes):
            out["mean_pixel_auc"] = {m: self.mean_pixel(m) for m in self.methods}
        return out


def one_class(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    class_names: Sequence[str],
    methods: Sequence[Method],
    classes: Optional[Sequence[int]] = None,
    features: str = "",
    seed: int = 0,
    spec: Optional[Any] = None,
) -> FeatureResult:
    """Run the protocol. ``train`` (N, ...), ``test`` (M, ...) features; labels (N,), (M,) ints.
    ``spec``: the features' EmbedderSpec, whose geometry (ignore zones, positional memory) scoring follows."""
    train = np.ascontiguousarray(train, dtype=np.float32)
    test = np.ascontiguousarray(test, dtype=np.float32)
    chosen = list(classes) if classes is not None else sorted(set(np.unique(train_labels).tolist()))
    results = []
    for c in chosen:
        normal = train[train_labels == c]
        if len(normal) == 0:
            raise ValueError(f"class {c} ({class_names[c]}) has no training images")
        anomalous = test_labels != c
        res = ClassResult(int(c), str(class_names[c]), int(len(normal)))
        kept_cache: dict[float, np.ndarray] = {}
        for m in methods:
            t0 = time.perf_counter()
            if m.clean_fraction not in kept_cache:
                kept_cache[m.clean_fraction] = fitting.kept_rows(normal, m.config(seed))
            index = fitting.build(normal[kept_cache[m.clean_fraction]], m.config(seed), spec)
            t1 = time.perf_counter()
            scores = fitting.score(index, test, spec)
            t2 = time.perf_counter()
            res.auc[m.name] = roc_auc(anomalous, scores)
            res.fit_seconds[m.name] = round(t1 - t0, 4)
            res.score_seconds[m.name] = round(t2 - t1, 4)
        results.append(res)
    return FeatureResult(features, [m.name for m in methods], results)


# ---------------------------------------------------------------- reports


def _pct(x: Optional[float]) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def table_per_class(main: FeatureResult, dataset: str, baselines: Sequence[FeatureResult] = ()) -> str:
    """Like DN2 Table 1: one row per class, ROC-AUC % per method; paper and baselines beside."""
    paper = PAPER.get(dataset, {})
    per_class_paper = paper.get("per_class")
    cols = list(main.methods) + [f"{b.features} kNN" for b in baselines]
    if paper:
        cols.append("DN2 paper (ResNet-101, exact)")
    lines = ["| class | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    base_by_class = [{c.index: c for c in b.classes} for b in baselines]
    for c in main.classes:
        cells = [_pct(c.auc[m]) for m in main.methods]
        cells += [_pct(b[c.index].auc.get("exact")) if c.index in b else "" for b in base_by_class]
        if paper:
            cells.append(
                f"{per_class_paper[c.index]:.1f}"
                if per_class_paper and c.index < len(per_class_paper)
                else ""
            )
        lines.append(f"| {c.index} {c.name} | " + " | ".join(cells) + " |")
    means = [f"**{_pct(main.mean(m))}**" for m in main.methods]
    means += [f"**{_pct(b.mean('exact'))}**" for b in baselines]
    if paper:
        means.append(f"**{paper['mean']:.1f}**")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    return "\n".join(lines)


def table_methods(main: FeatureResult, dataset: str) -> str:
    """Like DN2 Table 6: rows = C=1,3,5,10, exact; mean ROC-AUC % (paper's beside where known)."""
    paper_methods = PAPER.get(dataset, {}).get("methods", {})
    paper_mean = PAPER.get(dataset, {}).get("mean")
    header = "| method | mean ROC-AUC (ours) |" + (" DN2 paper |" if paper_mean else "")
    lines = [header, "|---|---:|" + ("---:|" if paper_mean else "")]
    order = [m for m in main.methods if m != "exact"] + (["exact"] if "exact" in main.methods else [])
    for m in order:
        row = f"| {m} | {100 * main.mean(m):.2f} |"
        if paper_mean:
            ref = paper_methods.get(m, paper_mean if m == "exact" else None)
            row += f" {ref:.2f} |" if ref is not None else " |"
        lines.append(row)
    return "\n".join(lines)


def render_markdown(
    report: dict[str, Any], main: FeatureResult, baselines: Sequence[FeatureResult] = ()
) -> str:
    ds = report["dataset"]
    head = [
        f"## One-class ROC-AUC: {ds['name']} ({report['spec_label']})",
        "",
        f"train images used: {ds['n_train']} ({ds['train_sample']}), test images: {ds['n_test']} "
        f"({ds['test_sample']}); k = {report['k']}, clean fraction = {report['clean_fraction']}",
        "",
        f"### Per class (ROC-AUC %, normal class vs all other test images; features: {main.features})",
        "",
        table_per_class(main, ds["name"], baselines),
        "",
        "### Exact kNN vs k-means index (mean ROC-AUC %)",
        "",
        table_methods(main, ds["name"]),
        "",
    ]
    t = report["timings"]
    head.append(
        f"Timings: embedding {t['embed_train_s']:.1f} s train + {t['embed_test_s']:.1f} s test "
        f"({'from cache' if t['from_cache'] else 'computed'}), evaluation {t['eval_s']:.1f} s, total {t['total_s']:.1f} s."
    )
    return "\n".join(head) + "\n"
