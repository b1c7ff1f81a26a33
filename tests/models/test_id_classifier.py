"""The id classifier's losses and augmentation against hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.models import id_classifier as m


def test_arcface_logits_and_loss_match_a_hand_computed_case():
    # two classes; the window's embedding is at 60 degrees from class 0 and 30 degrees from class 1
    cosines = jnp.asarray([[math.cos(math.pi / 3), math.cos(math.pi / 6)]])
    labels = jnp.asarray([0])
    scale, margin = 10.0, 0.5
    logits = np.asarray(m.arcface_logits(cosines, labels, scale, margin))
    target = scale * math.cos(math.pi / 3 + margin)  # the margin is added to the target's angle
    other = scale * math.cos(math.pi / 6)
    np.testing.assert_allclose(logits, [[target, other]], rtol=1e-5)
    head = m.Head("arcface", margin, scale, 1, (0, 1))
    loss = float(m._class_ce(cosines, labels, head, scale)[0])
    expected = -(target - math.log(math.exp(target) + math.exp(other)))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_arcface_margin_saturates_at_pi():
    cosines = jnp.asarray([[-0.99, 0.5]])
    logits = np.asarray(m.arcface_logits(cosines, jnp.asarray([0]), 2.0, 0.5))
    assert logits[0, 0] == pytest.approx(-2.0, rel=1e-5)  # cos(min(theta + m, pi)) = cos(pi)


def test_subcluster_class_probability_is_the_sum_of_its_subclusters():
    logits = jnp.asarray([[1.0, 2.0, 0.5, -1.0]])  # class 0: columns 0-1, class 1: columns 2-3
    probs = np.exp(np.asarray(logits[0])) / np.exp(np.asarray(logits[0])).sum()
    np.testing.assert_allclose(np.exp(np.asarray(m.class_log_probs(logits, 2)))[0],
                               [probs[0] + probs[1], probs[2] + probs[3]], rtol=1e-6)


def test_adacos_scale_matches_its_formula():
    cosines = jnp.asarray([[0.9, 0.1, -0.2], [0.0, 0.8, 0.3]])
    targets = jax.nn.one_hot(jnp.asarray([0, 1]), 3)
    s_old = 2.0
    b_avg = np.mean([math.exp(s_old * 0.1) + math.exp(s_old * -0.2), math.exp(0.0) + math.exp(s_old * 0.3)])
    theta_med = np.median([math.acos(0.9), math.acos(0.8)])
    expected = math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))
    assert float(m.adacos_scale(cosines, targets, s_old, 1)) == pytest.approx(expected, rel=1e-5)
    assert m.fixed_adacos_scale(5) == pytest.approx(math.sqrt(2) * math.log(4))


def test_mask_bands_zero_whole_bands_only_and_mixup_mixes_labels_with_lam():
    key = jax.random.PRNGKey(0)
    windows = jnp.ones((16, 20, 12))
    masked = np.asarray(m.mask_bands(key, windows, 1, 5, axis=1))
    zero_frames = (masked == 0).all(axis=2)  # a frame is either wholly masked or untouched
    assert ((masked == 0) | (masked == 1)).all() and (zero_frames == (masked == 0).any(axis=2)).all()
    widths = zero_frames.sum(axis=1)
    assert widths.max() <= 5 and widths.max() > 0
    for row in zero_frames:  # one contiguous band
        idx = np.flatnonzero(row)
        assert len(idx) == 0 or (idx[-1] - idx[0] + 1) == len(idx)

    labels = jnp.arange(16)
    x = jax.random.normal(key, (16, 4, 3))
    spectra = jax.random.normal(jax.random.PRNGKey(5), (16, 20))
    mixed, mixed_spectra, partner, lam = m.augment(key, x, labels, m.Augment(mixup_alpha=0.4), spectra)
    partner, lam = np.asarray(partner), np.asarray(lam)
    assert ((lam >= 0) & (lam <= 1)).all()
    np.testing.assert_allclose(np.asarray(mixed), lam[:, None, None] * np.asarray(x)
                               + (1 - lam[:, None, None]) * np.asarray(x)[partner], rtol=1e-5, atol=1e-6)
    # a clip's spectrum is mixed with the same partner and the same lam as its window
    np.testing.assert_allclose(np.asarray(mixed_spectra), lam[:, None] * np.asarray(spectra)
                               + (1 - lam[:, None]) * np.asarray(spectra)[partner], rtol=1e-5, atol=1e-6)


def test_mixup_prob_mixes_only_that_share_of_the_windows():
    """ASDKit's mixup: lam ~ U(0, 1) (alpha 1) on each window with probability 0.5; the others stay as they were."""
    labels = jnp.arange(4000)  # each its own label: the partner labels returned are the partner indices
    x = jax.random.normal(jax.random.PRNGKey(2), (4000, 3, 2))
    mixed, _, partner, lam = m.augment(jax.random.PRNGKey(4), x, labels, m.Augment(mixup_alpha=1.0, mixup_prob=0.5))
    lam, partner = np.asarray(lam), np.asarray(partner)
    untouched = lam == 1.0
    assert 0.45 < untouched.mean() < 0.55  # 4000 draws: 0.5 +- 0.025 is 3 standard deviations
    np.testing.assert_array_equal(np.asarray(mixed)[untouched], np.asarray(x)[untouched])
    assert 0.4 < lam[~untouched].mean() < 0.6 and lam[~untouched].min() < 0.05  # uniform on [0, 1)
    np.testing.assert_allclose(np.asarray(mixed), lam[:, None, None] * np.asarray(x)
                               + (1 - lam[:, None, None]) * np.asarray(x)[partner], rtol=1e-5, atol=1e-6)
    everything = m.augment(jax.random.PRNGKey(4), x, labels, m.Augment(mixup_alpha=1.0))[3]
    assert (np.asarray(everything) < 1.0).all()


def _module(loss="arcface", subclusters=1, class_units=(0, 0, 1)):
    return m.ClassifierModule(num_classes=len(class_units), channels=(4, 8), embedding_dim=8,
                              subclusters=subclusters, head=m.Head(loss, 0.5, 5.0, subclusters, class_units))


@pytest.mark.parametrize("loss,subclusters", [("arcface", 1), ("adacos", 1), ("adacos", 2)])
def test_scoring_error_is_minus_log_probability_of_the_unit(loss, subclusters):
    module = _module(loss, subclusters)
    windows = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 10))
    variables = module.init(jax.random.PRNGKey(0), windows, train=False)
    _, cosines = module.apply(variables, windows, train=False)
    scale = float(variables["batch_stats"]["adacos_scale"]) if loss == "adacos" else 5.0
    logits = scale * np.asarray(cosines, np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    class_probs = probs.reshape(3, 3, subclusters).sum(axis=2)
    unit_probs = np.stack([class_probs[:, 0] + class_probs[:, 1], class_probs[:, 2]], axis=1)
    units = jnp.asarray([0, 1, -1])  # -1: a unit not trained on -> the best class
    errors, stats = m.classifier_errors(module, variables, {"windows": windows, "labels": units}, False)
    assert stats is None
    np.testing.assert_allclose(np.asarray(errors), [-math.log(unit_probs[0, 0]), -math.log(unit_probs[1, 1]),
                                                    -math.log(class_probs[2].max())], rtol=1e-4)


def test_training_error_updates_batch_stats_and_the_adacos_scale():
    module = _module("adacos")
    windows = jax.random.normal(jax.random.PRNGKey(1), (6, 16, 10))
    variables = module.init(jax.random.PRNGKey(0), windows, train=False)
    batch = {"windows": windows, "labels": jnp.asarray([0, 1, 2, 0, 1, 2]), "key": jax.random.PRNGKey(3)}
    errors, stats = m.classifier_errors(module, variables, batch, True)
    assert errors.shape == (6,) and np.isfinite(np.asarray(errors)).all()
    assert set(stats) == set(variables["batch_stats"])
    assert float(stats["adacos_scale"]) != pytest.approx(float(variables["batch_stats"]["adacos_scale"]))


@pytest.mark.parametrize("kernel_size,stride,height,width", [(3, 1, 7, 10), (3, 2, 8, 9), (1, 2, 5, 6), (3, 2, 1, 4)])
def test_patch_conv_equals_xla_same_convolution(kernel_size, stride, height, width):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, height, width, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (kernel_size, kernel_size, 3, 5))
    expected = jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = m.patch_conv(x, kernel, stride)
    assert got.shape == expected.shape == (2, -(-height // stride), -(-width // stride), 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # and the gradients (the training step differentiates through both)
    loss = lambda conv: lambda xx, kk: jnp.sum(jnp.sin(conv(xx, kk)))
    xla = lambda xx, kk: jax.lax.conv_general_dilated(xx, kk, (stride, stride), "SAME",
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    for g_patch, g_xla in zip(jax.grad(loss(lambda xx, kk: m.patch_conv(xx, kk, stride)), (0, 1))(x, kernel),
                              jax.grad(loss(xla), (0, 1))(x, kernel)):
        np.testing.assert_allclose(g_patch, g_xla, rtol=1e-4, atol=1e-4)


def test_both_convolution_paths_share_parameters_and_outputs():
    frames = jax.random.normal(jax.random.PRNGKey(2), (3, 16, 12))
    embedders = [m.ConvEmbedder(channels=(4, 8, 8), embedding_dim=6, patches=p) for p in (False, True)]
    variables = embedders[0].init(jax.random.PRNGKey(3), frames, train=False)
    assert jax.tree.structure(variables) == jax.tree.structure(embedders[1].init(jax.random.PRNGKey(3), frames, False))
    np.testing.assert_allclose(embedders[1].apply(variables, frames, train=False),
                               embedders[0].apply(variables, frames, train=False), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="conv='fft'"):
        m.uses_patches("fft")


@pytest.mark.parametrize("centres", ["trainable", "fixed"])
def test_fixed_centres_get_no_gradient_and_trainable_ones_do(centres):
    """Sub-cluster AdaCos with the centres kept at their random start (Wilkinghoff) or learnt (ASDKit's
    scac_trainable); the embedder learns either way."""
    import ml_collections

    section = ml_collections.ConfigDict(dict(
        frames=16, channels="4,8", stem_stride=2, embedding_dim=8, conv="patches", loss="adacos", margin=0.5,
        scale=30.0, subclusters=2, centres=centres, classes="auto", backend="knn", mixup_alpha=0.0, time_masks=0,
        time_mask_frames=8, freq_masks=0, freq_mask_bins=16))
    module = m.build_module(section, ["a", "b", "c"], [0, 0, 0])
    windows = jax.random.normal(jax.random.PRNGKey(1), (6, 16, 10))
    variables = module.init(jax.random.PRNGKey(0), windows, train=False)
    batch = {"windows": windows, "labels": jnp.asarray([0, 1, 2, 0, 1, 2]), "key": jax.random.PRNGKey(3)}

    def loss(params):
        return jnp.mean(m.classifier_errors(module, {**variables, "params": params}, batch, True)[0])

    grads = jax.grad(loss)(variables["params"])
    centre_grad = np.abs(np.asarray(grads["centres"])).max()
    assert (centre_grad == 0.0) == (centres == "fixed")
    assert np.abs(np.asarray(grads["ConvEmbedder_0"]["Dense_0"]["kernel"])).max() > 0
    section.centres = "moving"
    with pytest.raises(ValueError, match="centres='moving'"):
        m.check_section(section)


@pytest.mark.parametrize("kernel,stride,length", [(8, 4, 40), (6, 3, 31), (4, 4, 17)])
def test_strided_conv1d_equals_xla_valid_convolution_and_its_gradients(kernel, stride, length):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, length, 3))
    weights = jax.random.normal(jax.random.PRNGKey(1), (kernel, 3, 5))
    xla = lambda xx, ww: jax.lax.conv_general_dilated(xx[:, :length // stride * stride], ww, (stride,), "VALID",
                                                      dimension_numbers=("NWC", "WIO", "NWC"))
    got = m.strided_conv1d(x, weights, stride)
    assert got.shape == (2, length // stride - kernel // stride + 1, 5)
    np.testing.assert_allclose(got, xla(x, weights), rtol=1e-5, atol=1e-5)
    loss = lambda conv: lambda xx, ww: jnp.sum(jnp.sin(conv(xx, ww)))
    for g_ours, g_xla in zip(jax.grad(loss(lambda xx, ww: m.strided_conv1d(xx, ww, stride)), (0, 1))(x, weights),
                             jax.grad(loss(xla), (0, 1))(x, weights)):
        np.testing.assert_allclose(g_ours, g_xla, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="multiple of spectrum_stride"):
        m.strided_conv1d(x, jax.random.normal(jax.random.PRNGKey(1), (5, 3, 5)), 2)


@pytest.mark.parametrize("frontend, pooling", [
    ("dual", "frequency"), pytest.param("dual", "mean", marks=pytest.mark.slow), ("spectrum", "frequency"),
    ("spectrogram", "frequency")])
def test_frontends_embedding_shapes_and_every_branch_gets_gradients(frontend, pooling):
    """The dual frontend concatenates both branches' embeddings; the loss reaches every branch's first layer. With
    ``pooling="mean"`` the spectrum branch reads spectra of any length; with ``"frequency"`` (flattened positions)
    its parameters are built for the spectrum length it was initialised with, and the spectra are required."""
    module = m.ClassifierModule(num_classes=3, channels=(4, 8), embedding_dim=6, subclusters=2, frontend=frontend,
                                spectrum_channels=(4, 8, 8), spectrum_kernel=16, spectrum_stride=8, pooling=pooling,
                                head=m.Head("adacos", 0.5, 30.0, 2, (0, 1, 2)))
    windows = jax.random.normal(jax.random.PRNGKey(1), (6, 16, 10))
    spectra = jax.random.normal(jax.random.PRNGKey(200), (6, 200))
    variables = module.init(jax.random.PRNGKey(0), windows, train=False, spectra=spectra)
    for bins in (200, 333) if pooling == "mean" else (200,):
        spectra = jax.random.normal(jax.random.PRNGKey(bins), (6, bins))
        embeddings, cosines = module.apply(variables, windows, train=False, spectra=spectra)
        assert embeddings.shape == (6, 12 if frontend == "dual" else 6) and cosines.shape == (6, 6)
    if pooling == "frequency" and frontend != "spectrum":  # 16 frames -> 8 x 5 -> 4 x 3: 3 mel positions x 8
        assert variables["params"]["ConvEmbedder_0"]["Dense_0"]["kernel"].shape == (3 * 8, 6)
    if pooling == "frequency" and frontend != "spectrogram":  # 200 bins -> 25 frames - 1 -> 24 -> 12 -> 6 positions
        dense = variables["params"]["SpectrumEmbedder_0"]
        assert dense["Dense_0"]["kernel"].shape == (6 * 8, 6)
        assert len([k for k in dense if k.startswith("Dense_")]) == 2 + m.SPECTRUM_HIDDEN_LAYERS
    batch = {"windows": windows, "spectra": spectra, "labels": jnp.asarray([0, 1, 2, 0, 1, 2]),
             "key": jax.random.PRNGKey(3)}
    grads = jax.grad(lambda p: jnp.mean(m.classifier_errors(module, {**variables, "params": p}, batch, True)[0]))(
        variables["params"])
    assert set(grads) == {"centres", *({"ConvEmbedder_0"} if frontend != "spectrum" else set()),
                          *({"SpectrumEmbedder_0"} if frontend != "spectrogram" else set())}
    for branch, first in (("ConvEmbedder_0", "Conv_0"), ("SpectrumEmbedder_0", None)):
        if branch in grads:
            leaf = grads[branch][first]["kernel"] if first else grads[branch]["kernel"]
            assert np.isfinite(np.asarray(leaf)).all() and np.abs(np.asarray(leaf)).max() > 0
    if frontend != "spectrogram":
        with pytest.raises(ValueError, match="needs each clip's spectrum"):
            m.classifier_errors(module, variables, {"windows": windows, "labels": batch["labels"]}, False)
        with pytest.raises(ValueError, match="pass spectra"):
            module.init(jax.random.PRNGKey(0), windows, train=False)


def test_adaproj_similarity_is_the_norm_of_the_projection_onto_the_class_subspace():
    key = jax.random.PRNGKey(0)
    embeddings = jax.random.normal(key, (5, 7))
    centres = jax.random.normal(jax.random.PRNGKey(1), (3 * 2, 7))  # 3 classes, 2-dimensional subspaces
    got = np.asarray(m.projection_cosines(embeddings, centres, 3))
    x = np.asarray(embeddings, np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for c in range(3):
        basis = np.asarray(centres, np.float64)[2 * c:2 * c + 2].T  # [D, K]
        projected = basis @ np.linalg.lstsq(basis, x.T, rcond=None)[0]  # least-squares projection, [D, B]
        np.testing.assert_allclose(got[:, c], np.linalg.norm(projected, axis=0), rtol=1e-4)
    assert (got <= 1 + 1e-5).all()
    # a centre itself lies in its class's subspace: similarity 1
    np.testing.assert_allclose(np.asarray(m.projection_cosines(centres[2:3], centres, 3))[0, 1], 1.0, rtol=1e-5)


def test_adaproj_trains_with_the_adaptive_scale_and_scores_minus_log_probability():
    import ml_collections

    section = ml_collections.ConfigDict(dict(
        frames=16, channels="4,8", stem_stride=2, embedding_dim=8, conv="patches", loss="adaproj", margin=0.5,
        scale=30.0, subclusters=3, centres="trainable", classes="auto", backend="knn", mixup_alpha=0.0,
        time_masks=0, time_mask_frames=8, freq_masks=0, freq_mask_bins=16, frontend="spectrogram"))
    module = m.build_module(section, ["a", "b"], [0, 1])
    assert module.projection and module.head.subclusters == 1 and module.adaptive_scale
    windows = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 10))
    variables = module.init(jax.random.PRNGKey(0), windows, train=False)
    assert variables["params"]["centres"].shape == (2 * 3, 8)
    batch = {"windows": windows, "labels": jnp.asarray([0, 1, 0, 1]), "key": jax.random.PRNGKey(3)}
    errors, stats = m.classifier_errors(module, variables, batch, True)
    assert np.isfinite(np.asarray(errors)).all() and "adacos_scale" in stats
    scores, _ = m.classifier_errors(module, variables, {"windows": windows, "labels": jnp.asarray([0, 1, 0, 1])},
                                    False)
    _, cosines = module.apply(variables, windows, train=False)
    logits = float(variables["batch_stats"]["adacos_scale"]) * np.asarray(cosines, np.float64)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(np.asarray(scores), -log_p[np.arange(4), [0, 1, 0, 1]], rtol=1e-4)


def test_squeeze_excite_scales_each_channel_by_its_hand_computed_gate():
    """SE: the channel means through dense (C -> C // 16) + ReLU, dense (-> C) + sigmoid, one gate per channel."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3, 32))
    se = m.SqueezeExcite()
    variables = se.init(jax.random.PRNGKey(1), x)
    w1, w2 = (np.asarray(variables["params"][f"Dense_{i}"]["kernel"]) for i in (0, 1))
    assert w1.shape == (32, 2) and w2.shape == (2, 32)
    gate = 1 / (1 + np.exp(-(np.maximum(np.asarray(x).mean(axis=(1, 2)) @ w1, 0) @ w2)))
    np.testing.assert_allclose(se.apply(variables, x), np.asarray(x) * gate[:, None, None, :], rtol=1e-5, atol=1e-6)


def test_squeeze_excite_sits_in_every_residual_block_of_both_branches_and_trains():
    module = m.ClassifierModule(num_classes=3, channels=(4, 8, 16), embedding_dim=6, subclusters=2, frontend="dual",
                                spectrum_channels=(4, 8), spectrum_kernel=16, spectrum_stride=8, squeeze_excite=True,
                                head=m.Head("adacos", 0.5, 30.0, 2, (0, 1, 2)))
    windows = jax.random.normal(jax.random.PRNGKey(1), (6, 16, 10))
    spectra = jax.random.normal(jax.random.PRNGKey(2), (6, 200))
    variables = module.init(jax.random.PRNGKey(0), windows, train=False, spectra=spectra)
    params = variables["params"]
    for branch, blocks in (("ConvEmbedder_0", 2), ("SpectrumEmbedder_0", 1)):
        for index in range(blocks):
            assert "SqueezeExcite_0" in params[branch][f"ResidualBlock_{index}"]
    batch = {"windows": windows, "spectra": spectra, "labels": jnp.asarray([0, 1, 2, 0, 1, 2]),
             "key": jax.random.PRNGKey(3)}
    grads = jax.grad(lambda p: jnp.mean(m.classifier_errors(module, {**variables, "params": p}, batch, True)[0]))(
        params)
    gate = np.asarray(grads["ConvEmbedder_0"]["ResidualBlock_1"]["SqueezeExcite_0"]["Dense_1"]["kernel"])
    assert np.isfinite(gate).all() and np.abs(gate).max() > 0
    plain = module.clone(squeeze_excite=False).init(jax.random.PRNGKey(0), windows, train=False, spectra=spectra)
    assert "SqueezeExcite_0" not in plain["params"]["ConvEmbedder_0"]["ResidualBlock_0"]


@pytest.mark.parametrize("kernel_size,stride,height,width", [(7, 2, 15, 12), (3, 1, 5, 4), (3, 2, 3, 8)])
def test_patch_conv_valid_padding_equals_xla_and_its_gradients(kernel_size, stride, height, width):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, height, width, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (kernel_size, kernel_size, 3, 4))
    xla = lambda xx, kk: jax.lax.conv_general_dilated(xx, kk, (stride, stride), "VALID",
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = m.patch_conv(x, kernel, stride, "VALID")
    assert got.shape == (2, (height - kernel_size) // stride + 1, (width - kernel_size) // stride + 1, 4)
    np.testing.assert_allclose(got, xla(x, kernel), rtol=1e-5, atol=1e-5)
    loss = lambda conv: lambda xx, kk: jnp.sum(jnp.sin(conv(xx, kk)))
    for ours, theirs in zip(jax.grad(loss(lambda xx, kk: m.patch_conv(xx, kk, stride, "VALID")), (0, 1))(x, kernel),
                            jax.grad(loss(xla), (0, 1))(x, kernel)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="does not fit"):
        m.patch_conv(x[:, :2], kernel, stride, "VALID")


@pytest.mark.parametrize("padding,height,width", [("SAME", 9, 6), ("VALID", 9, 6), ("SAME", 4, 5), ("VALID", 3, 7)])
def test_max_pool_equals_flax_max_pool_and_its_gradient(padding, height, width):
    from flax import linen as nn

    x = jax.random.normal(jax.random.PRNGKey(4), (2, height, width, 3))
    theirs = lambda xx: nn.max_pool(xx, (3, 3), (2, 2), padding)
    np.testing.assert_allclose(m.max_pool(x, 3, 2, padding), theirs(x))
    loss = lambda pool: lambda xx: jnp.sum(jnp.sin(pool(xx)))
    np.testing.assert_allclose(jax.grad(loss(lambda xx: m.max_pool(xx, 3, 2, padding)))(x),
                               jax.grad(loss(theirs))(x), rtol=1e-5, atol=1e-6)


def _matmul_flops(module, variables, inputs: dict, batch: int) -> float:
    """Forward matmul FLOPs per example counted from the model itself: every Conv / Dense module's output elements
    times its kernel's fan-in, twice (multiply and add), read from the captured intermediates."""
    _, state = module.apply(variables, **inputs, capture_intermediates=True, mutable=["intermediates"])
    total = 0.0

    def walk(params, captured):
        nonlocal total
        for name, value in params.items():
            if name == "kernel" and "__call__" in captured:
                out = captured["__call__"][0]
                total += 2.0 * out.size / batch * value.size / value.shape[-1]
            elif isinstance(value, dict):
                walk(value, captured.get(name, {}))

    walk(variables["params"], state["intermediates"])
    return total


@pytest.mark.parametrize("body,squeeze_excite,pooling", [("asdkit", True, "frequency"), ("asdkit", False, "mean"),
                                                          ("compact", True, "frequency")])
def test_spectrogram_branch_flops_count_equals_the_models_own_matmuls(body, squeeze_excite, pooling):
    import ml_collections

    section = ml_collections.ConfigDict(dict(frames=40, channels="4,8,16", stem_stride=2, embedding_dim=6,
                                             pooling=pooling, squeeze_excite=squeeze_excite, body=body))
    embedder = (m.ASDKitConvEmbedder((4, 8, 16), 6, pooling=pooling, squeeze_excite=squeeze_excite)
                if body == "asdkit" else m.ConvEmbedder((4, 8, 16), 6, 2, pooling=pooling,
                                                        squeeze_excite=squeeze_excite))
    frames = jax.random.normal(jax.random.PRNGKey(0), (2, 40, 24))
    variables = embedder.init(jax.random.PRNGKey(1), frames, train=False)
    counted = _matmul_flops(embedder, variables, {"frames": frames, "train": False}, batch=2)
    assert m.spectrogram_flops(section, 24) == pytest.approx(counted)


def test_asdkit_spectrum_branch_flops_and_shapes_by_hand():
    """Three VALID strided convolutions of embedding_dim channels: 8000 bins -(kernel 32, stride 8)-> 997
    -(64, 32)-> 30 -(16, 4)-> 4 positions; the FLOPs of those matmuls and the dense layers, counted by hand."""
    import ml_collections

    dim, bins = 8, 8000
    section = ml_collections.ConfigDict(dict(embedding_dim=dim, spectrum_kernel=32, spectrum_stride=8,
                                             spectrum_pool=1, pooling="frequency", squeeze_excite=False,
                                             body="asdkit"))
    embedder = m.ASDKitSpectrumEmbedder(dim, 32, 8)
    spectra = jax.random.normal(jax.random.PRNGKey(0), (2, bins))
    variables = embedder.init(jax.random.PRNGKey(1), spectra, train=False)
    params = variables["params"]
    assert [params[f"kernel_{i}"].shape for i in range(3)] == [(32, 1, dim), (64, dim, dim), (16, dim, dim)]
    assert params["Dense_0"]["kernel"].shape == (4 * dim, dim)
    by_hand = 2.0 * (997 * 32 * 1 * dim + 30 * 64 * dim * dim + 4 * 16 * dim * dim) \
        + 2.0 * 4 * dim * dim + 2.0 * (1 + m.SPECTRUM_HIDDEN_LAYERS) * dim * dim
    assert m.asdkit_spectrum_flops(section, samples=2 * (bins - 1) + 1) == pytest.approx(by_hand)
    assert embedder.apply(variables, spectra, train=False).shape == (2, dim)
    # 4000 bins leave 497 -> 14 positions, fewer than the last kernel: the error names the settings to change
    with pytest.raises(ValueError, match="4000 bins.*spectrum_pool"):
        embedder.init(jax.random.PRNGKey(1), spectra[:, :4000], train=False)


@pytest.mark.parametrize("frontend", ["dual", "spectrogram", "spectrum"])
def test_asdkit_body_layers_shapes_and_every_branch_gets_gradients(frontend):
    """ASDKit's networks: a 7x7 stem, two pre-activation blocks per stage, affine-free normalisation throughout;
    the loss reaches both branches' first layers; the im2col and XLA convolutions give the same embeddings."""
    module = m.ClassifierModule(num_classes=3, channels=(4, 8), embedding_dim=6, subclusters=2, frontend=frontend,
                                spectrum_kernel=32, spectrum_stride=8, squeeze_excite=True, body="asdkit",
                                patches=True, head=m.Head("adacos", 0.5, 30.0, 2, (0, 1, 2)))
    windows = jax.random.normal(jax.random.PRNGKey(1), (6, 40, 24))
    spectra = jax.random.normal(jax.random.PRNGKey(2), (6, 8000))
    variables = module.init(jax.random.PRNGKey(0), windows, train=False, spectra=spectra)
    params = variables["params"]
    embeddings, cosines = module.apply(variables, windows, train=False, spectra=spectra)
    assert embeddings.shape == (6, 12 if frontend == "dual" else 6) and cosines.shape == (6, 6)
    if frontend != "spectrum":
        branch = params["ASDKitConvEmbedder_0"]
        assert branch["Conv_0"]["kernel"].shape == (7, 7, 1, 4)
        assert sorted(k for k in branch if k.startswith("PreActivationBlock")) == [
            f"PreActivationBlock_{i}" for i in range(4)]
        assert "Conv_2" in branch["PreActivationBlock_2"] and "Conv_2" not in branch["PreActivationBlock_3"]
        assert all("SqueezeExcite_0" in branch[f"PreActivationBlock_{i}"] for i in range(4))
        norms = [v for k, v in variables["batch_stats"]["ASDKitConvEmbedder_0"].items() if k.startswith("Batch")]
        assert norms and not any(k.startswith("BatchNorm") for k in branch)  # affine-free: no scale or bias
        xla = module.clone(patches=False).apply(variables, windows, train=False, spectra=spectra)[0]
        np.testing.assert_allclose(xla, embeddings, rtol=1e-4, atol=1e-4)
    batch = {"windows": windows, "spectra": spectra, "labels": jnp.asarray([0, 1, 2, 0, 1, 2]),
             "key": jax.random.PRNGKey(3)}
    grads = jax.grad(lambda p: jnp.mean(m.classifier_errors(module, {**variables, "params": p}, batch, True)[0]))(
        params)
    firsts = {"ASDKitConvEmbedder_0": ("Conv_0", "kernel"), "ASDKitSpectrumEmbedder_0": ("kernel_0",)}
    assert set(grads) == {"centres", *(b for b in firsts if (b == "ASDKitConvEmbedder_0") == (frontend != "spectrum")
                                       or frontend == "dual")}
    for branch in set(grads) - {"centres"}:
        leaf = grads[branch]
        for key in firsts[branch]:
            leaf = leaf[key]
        assert np.isfinite(np.asarray(leaf)).all() and np.abs(np.asarray(leaf)).max() > 0


def test_asdkit_body_refuses_the_settings_it_does_not_read():
    import ml_collections

    from asd_jax.methods import registry

    section = registry.get("id_classifier").default_config()
    section.body = "asdkit"
    m.check_section(section)
    for key, value, match in (("stem_stride", 1, "stem_stride=1"), ("spectrum_channels", "8,16", "spectrum_channels"),
                              ("body", "resnet", "body='resnet'")):
        bad = ml_collections.ConfigDict(section.to_dict())
        bad[key] = value
        with pytest.raises(ValueError, match=match):
            m.check_section(bad)
