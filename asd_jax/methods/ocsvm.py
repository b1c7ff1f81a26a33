"""Write-up Method I: one vector per clip -> StandardScaler -> OneClassSVM (RBF), gamma and nu chosen on a grid.

Clip vectors are pooled VGGish embeddings (``--method=vggish_ocsvm``) or the per-bin mean and std of the log-mel
spectrogram (``--method=logmel_ocsvm``, :func:`logmel_stats`, no pretrained weights). Pipelines are fit on normal
training clips only; the anomaly score is the negated ``decision_function`` (higher = more anomalous, positive =
outside the learnt boundary). Pure scikit-learn/NumPy: the only output besides return values is the grid written
into a caller's results dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

SELECT_MODES = ("label_free", "oracle")
GAMMA_NAMES = ("scale", "auto")

LABEL_FREE_CRITERION = (
    "fit on the normal training clips minus a random hold-out; minimise |hold-out false-alarm rate - nu| + "
    "|AUC(hold-out vs fit-set scores) - 0.5|; among settings within one hold-out clip (1/n) of the minimum, "
    "take the widest margin rho/||w||; refit the chosen setting on all training clips")


def parse_gamma(value: str | float) -> str | float:
    """'scale' / 'auto' stay names (scikit-learn computes them from the data); anything else is a float."""
    text = str(value).strip()
    return text if text in GAMMA_NAMES else float(text)


def parse_grid(gammas: str | Sequence, nus: str | Sequence) -> tuple[list, list[float]]:
    """Config strings like 'scale,0.001,0.01' and '0.05,0.1' (or sequences) -> (gammas, nus)."""
    def items(value):
        return [item for item in (value.split(",") if isinstance(value, str) else value) if str(item).strip()]

    grid_gammas = [parse_gamma(item) for item in items(gammas)]
    grid_nus = [float(item) for item in items(nus)]
    if not grid_gammas or not grid_nus:
        raise ValueError(f"the OC-SVM grid needs at least one gamma and one nu; got {gammas!r} and {nus!r}")
    bad = [nu for nu in grid_nus if not 0.0 < nu <= 1.0]
    if bad:
        raise ValueError(f"nu must be in (0, 1]; got {bad}")
    return grid_gammas, grid_nus


def make_pipeline(gamma: str | float, nu: float) -> Pipeline:
    """StandardScaler -> OneClassSVM(kernel='rbf', gamma, nu); the scaler learns its statistics in ``fit`` only."""
    return Pipeline([("scaler", StandardScaler()), ("ocsvm", OneClassSVM(kernel="rbf", gamma=gamma, nu=nu))])


def fit(train_vectors: np.ndarray, gamma: str | float, nu: float) -> Pipeline:
    """A pipeline fit on ``train_vectors`` [clips, dims], which must be normal training clips only."""
    return make_pipeline(gamma, nu).fit(np.asarray(train_vectors, np.float64))


def anomaly_scores(pipeline: Pipeline, vectors: np.ndarray) -> np.ndarray:
    """[clips] negated decision function: higher = more anomalous, > 0 outside the boundary."""
    return -pipeline.decision_function(np.asarray(vectors, np.float64))


def margin(pipeline: Pipeline) -> float:
    """Geometric margin rho / ||w|| of the fitted OC-SVM in kernel feature space (what its training maximises).

    With ``score_samples(x) = sum_i alpha_i K(x_i, x)`` and ``w = sum_i alpha_i phi(x_i)``,
    ``||w||^2 = sum_i alpha_i score_samples(x_i)`` over the support vectors; ``rho`` is ``offset_``.
    """
    svm = pipeline.named_steps["ocsvm"]
    norm_sq = float(np.dot(svm.dual_coef_.ravel(), svm.score_samples(svm.support_vectors_)))
    return float(svm.offset_[0]) / math.sqrt(norm_sq) if norm_sq > 0 else math.nan


def logmel_stats(logmel: np.ndarray, chunk: int = 256) -> np.ndarray:
    """[clips, frames, bins] log-mel -> [clips, 2 * bins] per-bin mean then std over frames (streamed in chunks)."""
    if logmel.ndim != 3:
        raise ValueError(f"expected log-mel features [clips, frames, bins], got shape {logmel.shape}")
    out = np.empty((logmel.shape[0], 2 * logmel.shape[2]), np.float32)
    for start in range(0, logmel.shape[0], chunk):
        block = np.asarray(logmel[start:start + chunk], np.float64)
        out[start:start + len(block)] = np.concatenate([block.mean(axis=1), block.std(axis=1)], axis=1)
    return out


def mean_auc_over_ids(labels: np.ndarray, scores: np.ndarray, machine_ids: Sequence[str] | None = None) -> float:
    """Mean over machine ids of each id's AUC (the DCASE figure); unknown (-1) labels and one-class ids left out."""
    labels, scores = np.asarray(labels).astype(int).ravel(), np.asarray(scores, np.float64).ravel()
    ids = np.asarray(["all"] * len(labels) if machine_ids is None else [str(i) for i in machine_ids])
    if not len(ids) == len(labels) == len(scores):
        raise ValueError(f"got {len(labels)} labels, {len(scores)} scores and {len(ids)} machine ids")
    aucs = []
    for machine_id in sorted(set(ids.tolist())):
        keep = (ids == machine_id) & (labels >= 0)
        if len(set(labels[keep].tolist())) == 2:
            aucs.append(float(roc_auc_score(labels[keep], scores[keep])))
    return float(np.mean(aucs)) if aucs else math.nan


def _holdout_split(num_clips: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows): a seeded random hold-out of at least one clip, leaving at least two to fit."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1); got {holdout_fraction}")
    num_holdout = max(1, int(round(holdout_fraction * num_clips)))
    if num_clips - num_holdout < 2:
        raise ValueError(f"{num_clips} training clips are too few to hold out {holdout_fraction:.0%} and still fit")
    order = np.random.default_rng(seed).permutation(num_clips)
    return np.sort(order[num_holdout:]), np.sort(order[:num_holdout])


def _gap_auc(fit_scores: np.ndarray, holdout_scores: np.ndarray) -> float:
    """P(held-out score > fit-set score): 0.5 when unseen normals score like the ones fit, 1 when overfit."""
    labels = np.r_[np.zeros(len(fit_scores)), np.ones(len(holdout_scores))]
    return float(roc_auc_score(labels, np.r_[fit_scores, holdout_scores]))


def _json_gamma(gamma: str | float) -> str | float:
    return gamma if isinstance(gamma, str) else float(gamma)


def select(
    train_vectors: np.ndarray,
    grid_gammas: Sequence[str | float],
    grid_nus: Sequence[float],
    *,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    mode: str = "label_free",
    test_vectors: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    test_machine_ids: Sequence[str] | None = None,
    results: dict | None = None,
) -> tuple[dict, list[dict]]:
    """Choose (gamma, nu) on the grid; returns (best setting, one row of figures per grid point).

    ``mode="label_free"`` (default) uses normal training clips only. For each setting, a pipeline is fit on the
    training clips minus a seeded hold-out (``holdout_fraction``) and judged on how it treats the unseen normals:

    * ``holdout_false_alarm_rate``: the fraction of held-out normals outside the boundary. The OC-SVM puts a
      fraction ~nu of its training clips outside; a boundary that generalises does the same on unseen normals,
      while an overfit one (large gamma: a bump around each training clip) rejects most of them.
    * ``holdout_gap_auc``: P(held-out score > fit-set score). 0.5 when unseen normals score like the ones fit;
      towards 1 when the training clips sit deeper inside the boundary than unseen normals do (overfitting),
      a check on the whole score distribution rather than only at the threshold.

    The criterion is ``|false-alarm rate - nu| + |gap AUC - 0.5|`` (``calibration_error``); settings within one
    hold-out clip (1/n) of the best are tied, and the tie goes to the widest ``margin`` rho/||w||, the quantity the
    OC-SVM maximises, which favours the smoothest description among equally well calibrated ones. The caller then
    refits the chosen setting on all training clips (:func:`fit`).

    ``mode="oracle"`` picks the setting with the best test AUC (mean over ``test_machine_ids`` of the per-id AUC)
    of pipelines fit on all training clips, as the original write-up did. The test labels then steer the choice,
    so the result is flagged ``test_tuned`` and its AUC is not an unbiased estimate. Test clips are only ever
    scored, never fit. The label-free figures are computed in both modes.

    ``results``: when given, ``results["ocsvm"]`` receives the mode, the flag, the criterion, the best setting
    and the grid table, ready for results.json.
    """
    if mode not in SELECT_MODES:
        raise ValueError(f"mode must be one of {SELECT_MODES}; got {mode!r}")
    grid_gammas, grid_nus = parse_grid(list(grid_gammas), list(grid_nus))
    train_vectors = np.asarray(train_vectors, np.float64)
    if train_vectors.ndim != 2:
        raise ValueError(f"expected training vectors [clips, dims], got shape {train_vectors.shape}")
    if mode == "oracle":
        if test_vectors is None or test_labels is None:
            raise ValueError("mode='oracle' needs test_vectors and test_labels (and test_machine_ids for per-id AUC)")
        test_vectors = np.asarray(test_vectors, np.float64)
        if len(test_vectors) != len(test_labels):
            raise ValueError(f"got {len(test_vectors)} test vectors for {len(test_labels)} labels")

    fit_rows, holdout_rows = _holdout_split(len(train_vectors), holdout_fraction, seed)
    fit_part, holdout_part = train_vectors[fit_rows], train_vectors[holdout_rows]
    table = []
    for gamma in grid_gammas:
        for nu in grid_nus:
            pipeline = fit(fit_part, gamma, nu)
            fit_scores, holdout_scores = anomaly_scores(pipeline, fit_part), anomaly_scores(pipeline, holdout_part)
            false_alarm_rate = float(np.mean(holdout_scores > 0))
            gap_auc = _gap_auc(fit_scores, holdout_scores)
            row = {
                "gamma": _json_gamma(gamma),
                "nu": float(nu),
                "holdout_false_alarm_rate": false_alarm_rate,
                "holdout_gap_auc": gap_auc,
                "calibration_error": abs(false_alarm_rate - nu) + abs(gap_auc - 0.5),
                "margin": margin(pipeline),
                "num_support_vectors": int(pipeline.named_steps["ocsvm"].support_vectors_.shape[0]),
            }
            if mode == "oracle":
                full = fit(train_vectors, gamma, nu)
                row["test_auc"] = mean_auc_over_ids(test_labels, anomaly_scores(full, test_vectors), test_machine_ids)
            table.append(row)

    if mode == "oracle":
        aucs = np.array([row["test_auc"] for row in table])
        if np.all(np.isnan(aucs)):
            raise ValueError("oracle selection needs test labels with both normal and anomalous clips in some id")
        best_index = int(np.nanargmax(aucs))
    else:
        tolerance = 1.0 / len(holdout_rows) + 1e-12
        lowest = min(row["calibration_error"] for row in table)
        tied = [i for i, row in enumerate(table) if row["calibration_error"] <= lowest + tolerance]
        best_index = max(tied, key=lambda i: (np.nan_to_num(table[i]["margin"], nan=-np.inf), -i))
    for index, row in enumerate(table):
        row["selected"] = index == best_index
    best = {"gamma": table[best_index]["gamma"], "nu": table[best_index]["nu"], "mode": mode,
            "test_tuned": mode == "oracle"}
    if results is not None:
        results["ocsvm"] = {
            "mode": mode,
            "test_tuned": mode == "oracle",
            "criterion": "max mean per-id test AUC (test-tuned)" if mode == "oracle" else LABEL_FREE_CRITERION,
            "holdout_fraction": holdout_fraction,
            "num_fit": int(len(fit_rows)),
            "num_holdout": int(len(holdout_rows)),
            "seed": seed,
            "best": dict(best),
            "grid": table,
        }
    return best, table
