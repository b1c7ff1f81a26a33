"""The scoring backends against brute-force NumPy: every distance computed clip by clip."""

import pickle

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score

from asd_jax.methods.backends import (ANY_UNIT, BACKENDS, SOURCE, TARGET, from_arrays, make_backend)
from asd_jax.methods.knn import KNNBackend


def cosine(a, b):
    return 1.0 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))


def unit_vector(a):
    return a / np.linalg.norm(a)


def mean_smallest(values, k):
    return float(np.mean(sorted(values)[:k]))


def brute_knn(bank, query, k):
    """Mean cosine distance of one clip to the k nearest clips of a bank (a list of vectors)."""
    return mean_smallest([cosine(query, b) for b in bank], k)


def brute_domain(bank_source, bank_target, query, k_source, k_target):
    """The smaller kNN distance over the banks that hold clips."""
    return min(brute_knn(bank, query, k) for bank, k in ((bank_source, k_source), (bank_target, k_target)) if bank)


def banks_of(train, units, domains, unit):
    """(source clips, target clips) of a unit; every clip when the unit was not trained on or is ANY_UNIT."""
    pooled = unit == ANY_UNIT or unit not in set(units)
    chosen = [i for i in range(len(train)) if pooled or units[i] == unit]
    return ([train[i] for i in chosen if domains[i] != "target"], [train[i] for i in chosen if domains[i] == "target"])


def make_data(seed=0, dims=6):
    """Three units of different spread, each with many source and a few target clips, and labelled test clips."""
    rng = np.random.default_rng(seed)
    train, units, domains, test, test_units, labels = [], [], [], [], [], []
    for number, (unit, spread) in enumerate((("00", 0.3), ("01", 0.6), ("02", 1.0))):
        centre, shifted = rng.standard_normal(dims) * 3, rng.standard_normal(dims) * 3
        for domain, middle, count in (("source", centre, 40), ("target", shifted, 6)):
            train += list(middle + spread * rng.standard_normal((count, dims)))
            units += [unit] * count
            domains += [domain if number else None if domain == "source" else domain] * count
            for label, offset in ((0, 0.0), (1, 1.5 * spread)):
                test += list(middle + offset + spread * rng.standard_normal((8, dims)))
                test_units += [unit] * 8
                labels += [label] * 8
    return (np.asarray(train), units, domains, np.asarray(test), test_units, np.asarray(labels))


# ---------------------------------------------------------------------------------------------------------- knn
@pytest.mark.parametrize("k", [1, 3, 50])
def test_knn_equals_knn_module_and_brute_force(k):
    train, units, domains, test, test_units, _ = make_data()
    test_units = test_units[:-2] + ["07", ANY_UNIT]  # 07 was never trained on: every clip counts
    scores = make_backend("knn", k=k).fit(train, units, domains).score(test, test_units)
    np.testing.assert_allclose(scores, KNNBackend(k).fit(train, units).score(test, test_units), rtol=1e-12,
                               atol=1e-12)
    expected = [brute_knn(sum(banks_of(train, units, domains, u), []), x, k) for x, u in zip(test, test_units)]
    np.testing.assert_allclose(scores, expected, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------- knn_domain
@pytest.mark.parametrize("k, k_target", [(1, None), (3, 2), (2, 10)])
def test_knn_domain_is_the_smaller_of_the_two_bank_distances(k, k_target):
    train, units, domains, test, test_units, _ = make_data(1)
    test_units = test_units[:-1] + ["07"]
    backend = make_backend("knn_domain", k=k, k_target=k_target).fit(train, units, domains)
    expected = [brute_domain(*banks_of(train, units, domains, u), x, k, k_target or k)
                for x, u in zip(test, test_units)]
    np.testing.assert_allclose(backend.score(test, test_units), expected, rtol=1e-10, atol=1e-12)


def test_knn_domain_without_target_clips_is_plain_knn_and_a_target_only_unit_works():
    train, units, _, test, test_units, _ = make_data(2)
    plain = make_backend("knn", k=2).fit(train, units).score(test, test_units)
    np.testing.assert_allclose(make_backend("knn_domain", k=2).fit(train, units, None).score(test, test_units), plain,
                               rtol=1e-12)
    only_target = make_backend("knn_domain").fit(train[:5], ["x"] * 5, ["target"] * 5)
    np.testing.assert_allclose(only_target.score(test[:3], ["x"] * 3),
                               [brute_knn(list(train[:5]), x, 1) for x in test[:3]], rtol=1e-10)


# ------------------------------------------------------------------------------------------------------- kmeans
def test_kmeans_centres_are_sklearns_and_the_score_is_the_nearest_centre_or_target_clip():
    train, units, domains, test, test_units, _ = make_data(3)
    backend = make_backend("kmeans", clusters=4, seed=7).fit(train, units, domains)
    for unit in ("00", "01", "02"):
        source, target = banks_of(train, units, domains, unit)
        normalised = np.asarray([unit_vector(s) for s in source])
        centres = KMeans(n_clusters=4, n_init=1, random_state=7).fit(normalised).cluster_centers_
        centres = [unit_vector(c) for c in centres]
        memory = backend.memory[unit]
        np.testing.assert_allclose(memory.vectors[memory.bank == SOURCE], centres, rtol=1e-10, atol=1e-12)
        assert (memory.bank == TARGET).sum() == len(target)
        rows = [i for i, u in enumerate(test_units) if u == unit]
        expected = [brute_domain(centres, target, test[i], 1, 1) for i in rows]
        np.testing.assert_allclose(backend.score(test[rows], [unit] * len(rows)), expected, rtol=1e-10, atol=1e-12)


def test_kmeans_with_as_many_centres_as_clips_equals_knn_domain_with_k1():
    train, units, domains, test, test_units, _ = make_data(4)
    domain = make_backend("knn_domain", k=1).fit(train, units, domains).score(test, test_units)
    for clusters in (40, 200):  # every unit has 40 source clips
        kmeans = make_backend("kmeans", clusters=clusters).fit(train, units, domains)
        np.testing.assert_allclose(kmeans.score(test, test_units), domain, rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------------------------------- smote
def test_smote_adds_the_stated_number_of_target_samples_between_neighbouring_target_clips():
    rng = np.random.default_rng(5)
    train = rng.standard_normal((130, 5))
    units, domains = ["a"] * 130, ["source"] * 100 + ["target"] * 7 + [None] * 23  # None: source
    backend = make_backend("smote", ratio=0.2, smote_neighbors=2, seed=3).fit(train, units, domains)
    memory = backend.memory["a"]
    count = int(0.2 * 123 - 7)
    assert count == 17 and backend.synthetic_count(123, 7) == count
    assert (memory.bank == SOURCE).sum() == 123 and (memory.bank == TARGET).sum() == 7 + count
    targets = [unit_vector(t) for t in train[100:107]]
    np.testing.assert_allclose(memory.vectors[memory.bank == TARGET][:7], targets, rtol=1e-12)
    for sample in memory.vectors[memory.bank == TARGET][7:]:
        assert np.isclose(np.linalg.norm(sample), 1.0)
        found = False
        for i in range(7):
            distances = [cosine(targets[i], targets[j]) if j != i else np.inf for j in range(7)]
            for j in np.argsort(distances)[:2]:  # one of its 2 nearest target neighbours
                pair = np.stack([targets[i], targets[j]], 1)
                weights, *_ = np.linalg.lstsq(pair, sample, rcond=None)
                if np.allclose(pair @ weights, sample, atol=1e-9) and (weights >= -1e-9).all():
                    found = True
        assert found, "a synthetic target sample is not between a target clip and one of its nearest neighbours"
    again = make_backend("smote", ratio=0.2, smote_neighbors=2, seed=3).fit(train, units, domains).memory["a"]
    np.testing.assert_array_equal(again.vectors, memory.vectors)
    other = make_backend("smote", ratio=0.2, smote_neighbors=2, seed=4).fit(train, units, domains).memory["a"]
    assert not np.array_equal(other.vectors, memory.vectors)


def test_smote_scores_are_knn_domain_over_the_enlarged_target_bank_and_need_two_target_clips():
    train, units, domains, test, test_units, _ = make_data(6)
    backend = make_backend("smote", ratio=0.5).fit(train, units, domains)
    for unit in ("00", "01", "02"):
        memory = backend.memory[unit]
        assert (memory.bank == TARGET).sum() == int(0.5 * 40)  # 6 clips + int(0.5 * 40 - 6) synthetic
        rows = [i for i, u in enumerate(test_units) if u == unit]
        expected = [brute_domain(list(memory.vectors[memory.bank == SOURCE]),
                                 list(memory.vectors[memory.bank == TARGET]), test[i], 1, 1) for i in rows]
        np.testing.assert_allclose(backend.score(test[rows], [unit] * len(rows)), expected, rtol=1e-10)
    single = make_backend("smote").fit(train[:11], ["a"] * 11, ["source"] * 10 + ["target"])
    assert (single.memory["a"].bank == TARGET).sum() == 1
    few = make_backend("smote", ratio=0.1).fit(train[:16], ["a"] * 16, ["source"] * 10 + ["target"] * 6)
    assert (few.memory["a"].bank == TARGET).sum() == 6  # int(0.1 * 10 - 6) < 0: nothing added


# -------------------------------------------------------------------------------------------------- knn_rescale
def brute_rescale(bank, query, k, k_ref):
    """mean_k of ||x - r|| / c(r), c(r) the mean of r's k_ref smallest distances to the other bank clips."""
    bank = [unit_vector(b) for b in bank]
    query = unit_vector(query)
    ratios = []
    for j, r in enumerate(bank):
        others = [np.linalg.norm(r - o) for i, o in enumerate(bank) if i != j]
        scale = mean_smallest(others, k_ref) if others else 1.0
        ratios.append(np.linalg.norm(query - r) / scale)
    return mean_smallest(ratios, k)


@pytest.mark.parametrize("k, k_ref", [(1, 4), (3, 2), (2, 100)])
def test_knn_rescale_equals_brute_force(k, k_ref):
    train, units, domains, test, test_units, _ = make_data(7)
    backend = make_backend("knn_rescale", k=k, k_ref=k_ref).fit(train, units, domains)
    expected = [brute_rescale(sum(banks_of(train, units, domains, u), []), x, k, k_ref)
                for x, u in zip(test, test_units)]
    np.testing.assert_allclose(backend.score(test, test_units), expected, rtol=1e-8)
    lone = make_backend("knn_rescale").fit(train[:1], ["a"])
    np.testing.assert_allclose(lone.score(test[:2], ["a", "a"]),
                               [np.linalg.norm(unit_vector(x) - unit_vector(train[0])) for x in test[:2]], rtol=1e-8)


# -------------------------------------------------------------------------------------------------- fallback
@pytest.mark.parametrize("name", ["knn_domain", "kmeans", "smote", "knn_rescale"])
def test_a_clip_of_an_unknown_unit_is_compared_with_every_units_memory(name):
    train, units, domains, test, _, _ = make_data(8)
    backend = make_backend(name, **({"clusters": 5} if name == "kmeans" else {})).fit(train, units, domains)
    nearest = np.min([backend.score(test, [u] * len(test)) for u in ("00", "01", "02")], axis=0)  # k = 1
    np.testing.assert_allclose(backend.score(test, ["07"] * len(test)), nearest, rtol=1e-12)
    np.testing.assert_allclose(backend.score(test, [ANY_UNIT] * len(test)), nearest, rtol=1e-12)


# ---------------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("name", BACKENDS)
def test_normalisation_keeps_every_units_auc(name):
    train, units, domains, test, test_units, labels = make_data(9)
    options = {"clusters": 5} if name == "kmeans" else {}
    raw = make_backend(name, **options).fit(train, units, domains).score(test, test_units)
    normalised = make_backend(name, normalise=True, **options).fit(train, units, domains).score(test, test_units)
    assert not np.allclose(raw, normalised)
    for unit in ("00", "01", "02"):
        rows = np.asarray(test_units) == unit
        assert roc_auc_score(labels[rows], normalised[rows]) == roc_auc_score(labels[rows], raw[rows])


@pytest.mark.parametrize("name, k", [("knn", 1), ("knn", 3), ("knn_domain", 2)])
def test_normalisation_standardises_with_leave_one_out_training_scores(name, k):
    train, units, domains, test, test_units, _ = make_data(10)
    backend = make_backend(name, k=k, normalise=True).fit(train, units, domains)
    raw = make_backend(name, k=k).fit(train, units, domains).score(test, test_units)
    for unit in ("00", "01", "02"):
        rows = [i for i, u in enumerate(units) if u == unit]
        loo = []
        for i in rows:  # each training clip against its unit's clips without itself
            source = [train[j] for j in rows if j != i and domains[j] != "target"]
            target = [train[j] for j in rows if j != i and domains[j] == "target"]
            loo.append(brute_domain(source + target, [], train[i], k, k) if name == "knn"
                       else brute_domain(source, target, train[i], k, k))
        mean, std = np.mean(loo), np.std(loo)
        np.testing.assert_allclose(backend.statistics[unit], (mean, std), rtol=1e-10)
        standardised = (np.asarray(loo) - backend.statistics[unit][0]) / backend.statistics[unit][1]
        np.testing.assert_allclose([standardised.mean(), standardised.std()], [0.0, 1.0], atol=1e-10)
        chosen = np.asarray(test_units) == unit
        np.testing.assert_allclose(backend.score(test[chosen], [unit] * chosen.sum()), (raw[chosen] - mean) / std,
                                   rtol=1e-10, atol=1e-12)


def test_normalisation_of_a_single_clip_unit_uses_the_statistics_of_all_clips():
    train, units, domains, test, _, _ = make_data(11)
    backend = make_backend("knn", normalise=True).fit(np.concatenate([train, test[:1]]), units + ["lone"])
    assert backend.statistics["lone"] == backend.statistics[ANY_UNIT]
    loo = [brute_knn([t for j, t in enumerate(train) if j != i] + [test[0]], x, 1) for i, x in enumerate(train)]
    loo.append(brute_knn(list(train), test[0], 1))
    np.testing.assert_allclose(backend.statistics[ANY_UNIT], (np.mean(loo), np.std(loo)), rtol=1e-10)


# ---------------------------------------------------------------------------------------------------- storage
@pytest.mark.parametrize("name", BACKENDS)
def test_pickle_and_arrays_round_trips_give_identical_scores(name, tmp_path):
    train, units, domains, test, test_units, _ = make_data(12)
    test_units = test_units[:-1] + ["07"]
    backend = make_backend(name, normalise=True).fit(train, units, domains)
    expected = backend.score(test, test_units)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(backend)).score(test, test_units), expected)
    np.savez(tmp_path / "backend.npz", **backend.to_arrays())
    with np.load(tmp_path / "backend.npz") as saved:
        loaded = from_arrays(saved)
    assert type(loaded) is type(backend) and loaded.options() == backend.options()
    np.testing.assert_array_equal(loaded.score(test, test_units), expected)


# ------------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_errors_that_name_the_fix():
    train, units, domains, test, test_units, _ = make_data(13)
    with pytest.raises(ValueError, match="unknown backend 'lof': choose one of knn, knn_domain"):
        make_backend("lof")
    with pytest.raises(ValueError, match="no option clusters; its options are k, normalise"):
        make_backend("knn", clusters=3)
    with pytest.raises(ValueError, match="k must be a whole number >= 1"):
        make_backend("knn_domain", k=0)
    with pytest.raises(ValueError, match="ratio"):
        make_backend("smote", ratio=-1)
    backend = make_backend("knn_domain")
    with pytest.raises(ValueError, match="units: give one unit"):
        backend.fit(train, units[:-1], domains)
    with pytest.raises(ValueError, match="domains: give one domain per clip, or domains=None"):
        backend.fit(train, units, domains[:-1])
    with pytest.raises(ValueError, match="unknown domain 'tgt': a clip's domain is 'source', 'target' or None"):
        backend.fit(train, units, ["tgt"] * len(train))
    with pytest.raises(ValueError, match="at least one training clip"):
        backend.fit(np.zeros((0, 6)), [], [])
    with pytest.raises(ValueError, match="2-D array"):
        backend.fit(train[0], units[:1])
    with pytest.raises(RuntimeError, match="not fitted: call fit"):
        backend.score(test, test_units)
    backend.fit(train, units, domains)
    with pytest.raises(ValueError, match="units: give one unit"):
        backend.score(test, test_units[:-1])
    with pytest.raises(ValueError, match="fit on 6"):
        backend.score(test[:, :4], test_units)
    assert backend.score(np.zeros((0, 6)), []).shape == (0,)
    with pytest.raises(ValueError, match="pass what Backend.to_arrays"):
        from_arrays({"backend": np.asarray("knn")})
