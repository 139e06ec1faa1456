"""Each loss against an independent float64 numpy loop or a hand-done case."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emodna_jax import losses

RTOL, ATOL = 1e-5, 1e-6

# Jitted once here: op-by-op dispatch compiles every primitive separately,
# which makes small eager tests slow.
masked_mean = jax.jit(losses.masked_mean)
cross_entropy = jax.jit(losses.cross_entropy)
cross_entropy_grad = jax.jit(jax.grad(losses.cross_entropy))
supcon = jax.jit(losses.supervised_contrastive)
supcon_grad = jax.jit(jax.grad(losses.supervised_contrastive))
decoupling_loss = jax.jit(losses.decoupling_loss,
                          static_argnames="num_classes")
update_threshold_state = jax.jit(losses.update_threshold_state)
confidence_mask = jax.jit(losses.confidence_mask)
class_sums = jax.jit(losses.class_sums, static_argnums=2)
class_alignment = jax.jit(losses.class_alignment_loss)
class_alignment_grad = jax.jit(jax.grad(losses.class_alignment_loss,
                                        argnums=(0, 3)))
mmd2 = jax.jit(losses.mmd2, static_argnames="multipliers")
mmd2_grad = jax.jit(jax.grad(losses.mmd2, argnums=(0, 1)),
                    static_argnames="multipliers")


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Inputs and checks stay in numpy: eager jnp ops would each compile.
def f32(a):
    return np.asarray(a, np.float32)


def maxabs(a):
    return float(np.abs(np.asarray(a, np.float32)).max())


def all_finite(tree):
    return all(bool(np.isfinite(np.asarray(leaf, np.float32)).all())
               for leaf in jax.tree_util.tree_leaves(tree))


# ---------------------------------------------------------------------------
# Reference implementations: plain loops, float64.


def np_log_softmax(row):
    row = np.asarray(row, np.float64)
    top = max(row)
    return [v - top - math.log(sum(math.exp(u - top) for u in row))
            for v in row]


def np_cross_entropy(logits, labels, ls=0.0, mask=None):
    total, count = 0.0, 0
    for b in range(len(labels)):
        if mask is not None and not mask[b] > 0:
            continue
        logp = np_log_softmax(logits[b])
        c = len(logp)
        loss = 0.0
        for k in range(c):
            target = (1 - ls) * (k == labels[b]) + ls / c
            loss -= target * logp[k]
        total += loss
        count += 1
    return total / count if count else 0.0


def np_supcon(features, groups, valid, temperature):
    n = len(groups)
    sims = np.asarray(features, np.float64) @ np.asarray(features,
                                                         np.float64).T
    losses_, anchors = 0.0, 0
    for i in range(n):
        if not valid[i]:
            continue
        positives = [j for j in range(n)
                     if j != i and valid[j] and groups[j] == groups[i]]
        if not positives:
            continue
        denom = sum(math.exp(sims[i, a] / temperature) for a in range(n)
                    if a != i and valid[a])
        loss = 0.0
        for p in positives:
            loss -= math.log(math.exp(sims[i, p] / temperature) / denom)
        losses_ += loss / len(positives)
        anchors += 1
    return losses_ / anchors if anchors else 0.0


def np_sq_dist(a, b):
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            out[i, j] = sum((float(a[i, k]) - float(b[j, k])) ** 2
                            for k in range(a.shape[1]))
    return out


def np_median_sq_distance(z):
    values = []
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            values.append(sum((float(z[i, k]) - float(z[j, k])) ** 2
                              for k in range(z.shape[1])))
    return float(np.median(values))


def np_mmd2(x, y, multipliers, gamma=None):
    if gamma is None:
        gamma = max(np_median_sq_distance(np.concatenate([x, y])), 1e-6)
    total = 0.0
    for m in multipliers:
        width = m * gamma
        kxx = np.mean(np.exp(-np_sq_dist(x, x) / width))
        kyy = np.mean(np.exp(-np_sq_dist(y, y) / width))
        kxy = np.mean(np.exp(-np_sq_dist(x, y) / width))
        total += kxx + kyy - 2 * kxy
    return total / len(multipliers)


# ---------------------------------------------------------------------------
# Classification.


def test_masked_mean_by_hand():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    assert float(masked_mean(values, np.array([1, 0, 1, 0]))) == 2.0
    assert float(masked_mean(values, None)) == 2.5
    assert float(masked_mean(values, np.array([0, 0, 0, 0]))) == 0.0
    # A non-finite value in a masked row must not leak (checked eagerly too:
    # under jit XLA may rewrite a 0/1 multiply into a select by itself).
    bad = np.array([1.0, np.nan, 3.0, np.inf])
    for fn in (masked_mean, losses.masked_mean):
        assert float(fn(bad, np.array([1, 0, 1, 0]))) == 2.0


def test_cross_entropy_label_smoothing_by_hand():
    # softmax([0, ln 3]) = [1/4, 3/4]; C = 2, ls = 0.2 -> targets [0.1, 0.9].
    logits = np.array([[0.0, math.log(3.0)]])
    got = cross_entropy(logits, np.array([1]), label_smoothing=0.2)
    want = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    np.testing.assert_allclose(float(got), want, rtol=RTOL)
    plain = cross_entropy(logits, np.array([1]), label_smoothing=0.0)
    np.testing.assert_allclose(float(plain), -math.log(0.75), rtol=RTOL)


@pytest.mark.parametrize("b,c,ls", [(7, 4, 0.1), (16, 7, 0.3)])
def test_cross_entropy_matches_loop(b, c, ls):
    rng = np.random.default_rng(b * 10 + c)
    logits = 3 * rng.standard_normal((b, c))
    labels = rng.integers(0, c, b)
    mask = rng.random(b) < 0.6
    mask[0] = True
    args = (f32(logits), np.asarray(labels))
    got = cross_entropy(*args, label_smoothing=ls, mask=np.asarray(mask))
    np.testing.assert_allclose(float(got),
                               np_cross_entropy(logits, labels, ls, mask),
                               rtol=RTOL)
    if b == 7:
        # A float mask counts rows with mask > 0, each once.
        weights = mask * rng.uniform(0.5, 2.0, b)
        got_f = cross_entropy(*args, label_smoothing=ls, mask=f32(weights))
        np.testing.assert_allclose(float(got_f), float(got), rtol=RTOL)


def test_cross_entropy_empty_mask_is_zero_with_finite_grad():
    logits = f32(np.random.default_rng(0).standard_normal((7, 4)))
    args = (logits, np.zeros(7, np.int32))
    kwargs = dict(label_smoothing=0.1, mask=np.zeros(7, bool))
    assert float(cross_entropy(*args, **kwargs)) == 0.0
    grad = cross_entropy_grad(*args, **kwargs)
    assert all_finite(grad) and maxabs(grad) == 0.0


def test_cross_entropy_bf16_logits_computed_in_float32():
    rng = np.random.default_rng(3)
    logits = np.asarray(rng.standard_normal((7, 4)), jnp.bfloat16)
    labels = rng.integers(0, 4, 7)
    got = cross_entropy(logits, labels)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(
        float(got), np_cross_entropy(np.asarray(logits, np.float64), labels),
        rtol=RTOL)


def test_additive_margin_logits_by_hand():
    cosines = np.array([[0.5, 0.2], [0.1, -0.3]])
    got = losses.additive_margin_logits(cosines, np.array([0, 1]),
                                        scale=10.0, margin=0.2)
    np.testing.assert_allclose(np.asarray(got), [[3.0, 2.0], [1.0, -5.0]],
                               rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------
# Contrastive decoupling.


@pytest.mark.parametrize("n,d,groups,temperature",
                         [(12, 8, 3, 0.1), (20, 16, 5, 0.07)])
def test_supervised_contrastive_matches_loop(n, d, groups, temperature):
    rng = np.random.default_rng(n)
    feats = unit_rows(rng, n, d)
    grp = rng.integers(0, groups, n)
    valid = rng.random(n) < 0.75
    valid[:3] = True
    grp[1] = grp[0]    # at least one anchor with a positive
    got = supcon(f32(feats), np.asarray(grp),
                 np.asarray(valid), temperature=temperature)
    want = np_supcon(feats, grp, valid, temperature)
    assert want > 0
    np.testing.assert_allclose(float(got), want, rtol=RTOL)


def test_supervised_contrastive_by_hand():
    # Three unit vectors, T = 1: anchors 0 and 1 are positives of each other,
    # row 2 (its own group) is only a negative.
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # s_01 = 0, s_02 = -1, s_12 = 0:
    # loss_0 = -log(1 / (1 + e^-1)), loss_1 = -log(1 / (1 + 1)).
    want = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    got = supcon(f32(feats), np.array([0, 0, 1]),
                 np.array([True, True, True]), temperature=1.0)
    np.testing.assert_allclose(float(got), want, rtol=RTOL)


def test_supervised_contrastive_ignores_invalid_rows():
    rng = np.random.default_rng(1)
    feats = unit_rows(rng, 12, 8)
    grp = np.array([0, 0, 1, 1, 0, 1, 2, 2, 3, 3, 1, 0])
    valid = np.array([1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1], bool)
    other = feats.copy()
    other[~valid] = unit_rows(rng, int((~valid).sum()), 8)
    fn = lambda f: float(supcon(f32(f),
                                np.asarray(grp), np.asarray(valid),
                                temperature=0.2))
    np.testing.assert_allclose(fn(feats), fn(other), rtol=RTOL)
    # Row 6 is valid but its only group-mate is invalid: not an anchor.
    np.testing.assert_allclose(fn(feats), np_supcon(feats, grp, valid, 0.2),
                               rtol=RTOL)
    assert fn(feats) != fn(np.where(valid[:, None], other[::-1], feats))


def test_supervised_contrastive_empty_is_zero_with_finite_grad():
    rng = np.random.default_rng(2)
    feats = f32(unit_rows(rng, 12, 8))
    for groups, valid in [(np.zeros(12, np.int32), np.zeros(12, bool)),
                          (np.arange(12), np.ones(12, bool))]:
        assert float(supcon(feats, groups, valid, temperature=0.1)) == 0.0
        grad = supcon_grad(feats, groups, valid, temperature=0.1)
        assert all_finite(grad) and maxabs(grad) == 0.0
    # Random groups with invalid rows, low temperature: finite and non-zero.
    grp = np.asarray(rng.integers(0, 3, 12))
    valid = rng.random(12) < 0.7
    grad = supcon_grad(feats, grp, valid, temperature=0.01)
    assert all_finite(grad) and maxabs(grad) > 0
    # Un-normalised large features (s/T ~ 1e4) still give a finite gradient.
    grad = supcon_grad(30 * feats, grp, valid, temperature=0.1)
    assert all_finite(grad)


def np_decoupling(z_e, z_c, y, y_valid, corpus, temperature):
    """L_cd written per branch: anchors, positives and denominators by hand."""
    b = len(y)
    rows = [("e", i) for i in range(b) if y_valid[i]] + [("c", i)
                                                         for i in range(b)]
    feat = {("e", i): z_e[i] for i in range(b)}
    feat.update({("c", i): z_c[i] for i in range(b)})
    total, anchors = 0.0, 0
    for anchor in rows:
        branch, i = anchor
        if branch == "e":
            positives = [r for r in rows if r != anchor and r[0] == "e"
                         and y[r[1]] == y[i]]
        else:
            positives = [r for r in rows if r != anchor and r[0] == "c"
                         and corpus[r[1]] == corpus[i]]
        if not positives:
            continue
        sim = lambda r: float(np.dot(feat[anchor], feat[r])) / temperature
        denom = sum(math.exp(sim(r)) for r in rows if r != anchor)
        total += -sum(math.log(math.exp(sim(p)) / denom)
                      for p in positives) / len(positives)
        anchors += 1
    return total / anchors


def test_decoupling_loss_matches_branchwise_loop():
    b, num_classes = 10, 3
    rng = np.random.default_rng(0)
    z_e, z_c = unit_rows(rng, b, 5), unit_rows(rng, b, 5)
    # Emotion class k and corpus k share an id: they must not be positives.
    y = rng.integers(0, 2, b)
    corpus = rng.integers(0, 2, b)
    y_valid = rng.random(b) < 0.7
    y_valid[0] = True
    got = decoupling_loss(
        f32(z_e), np.asarray(z_c, jnp.bfloat16),
        np.asarray(y), np.asarray(y_valid), np.asarray(corpus),
        num_classes=num_classes, temperature=0.2)
    z_c_bf16 = np.asarray(z_c, jnp.bfloat16).astype(np.float64)
    np.testing.assert_allclose(
        float(got), np_decoupling(z_e, z_c_bf16, y, y_valid, corpus, 0.2),
        rtol=RTOL)


# ---------------------------------------------------------------------------
# Self-adaptive thresholds.


def test_threshold_state_by_hand():
    tau, p = losses.init_threshold_state(2)
    assert float(tau) == 0.5 and np.asarray(p).tolist() == [0.5, 0.5]
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    tau, p = update_threshold_state(tau, p, probs, momentum=0.9)
    # mean max = 0.7: tau = 0.9 * 0.5 + 0.1 * 0.7; mean p = [0.6, 0.4].
    np.testing.assert_allclose(float(tau), 0.52, rtol=RTOL)
    np.testing.assert_allclose(np.asarray(p), [0.51, 0.49], rtol=RTOL)
    thresholds = losses.class_thresholds(tau, p)
    np.testing.assert_allclose(np.asarray(thresholds),
                               [0.52, 0.52 * 0.49 / 0.51], rtol=RTOL)
    batch = np.array([[0.8, 0.2], [0.4, 0.6], [0.51, 0.49], [0.45, 0.55]])
    mask, pseudo = confidence_mask(batch, tau, p)
    assert np.asarray(pseudo).tolist() == [0, 1, 0, 1]
    # 0.51 < 0.52 (class 0); 0.55 >= 0.4996 (class 1).
    assert np.asarray(mask).tolist() == [True, True, False, True]


def test_confidence_mask_at_the_threshold_counts():
    # tau_g = 0.75, p_tilde = [0.5, 0.25] -> thresholds [0.75, 0.375], exact
    # in binary, so the ties below are exact.
    probs = np.array([[0.75, 0.25], [0.625, 0.375], [0.375, 0.625],
                      [0.25, 0.75]], np.float32)
    mask, pseudo = confidence_mask(probs, np.float32(0.75),
                                   np.array([0.5, 0.25], np.float32))
    assert np.asarray(pseudo).tolist() == [0, 0, 1, 1]
    assert np.asarray(mask).tolist() == [True, False, True, True]


def test_threshold_update_ignores_masked_rows_and_empty_batches():
    tau, p = losses.init_threshold_state(3)
    rng = np.random.default_rng(4)
    probs = f32(rng.dirichlet(np.ones(3), 6))
    mask = np.array([1, 0, 1, 1, 0, 1], bool)
    got = update_threshold_state(tau, p, probs, momentum=0.99,
                                 mask=np.asarray(mask))
    kept = np.asarray(probs, np.float64)[mask]
    want_tau = 0.99 / 3 + 0.01 * np.mean([max(r) for r in kept])
    want_p = 0.99 / 3 + 0.01 * kept.mean(axis=0)
    np.testing.assert_allclose(float(got[0]), want_tau, rtol=RTOL)
    np.testing.assert_allclose(np.asarray(got[1]), want_p, rtol=RTOL)
    same = update_threshold_state(*got, probs, momentum=0.5,
                                  mask=np.zeros(6, bool))
    np.testing.assert_array_equal(np.asarray(same[1]), np.asarray(got[1]))
    assert float(same[0]) == float(got[0])


def test_confidence_mask_matches_loop():
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(5) * 0.5, 40)
    tau, p = 0.7, rng.dirichlet(np.ones(5))
    mask, pseudo = confidence_mask(f32(probs),
                                   np.float32(tau), f32(p))
    for b in range(40):
        k = int(np.argmax(probs[b]))
        assert int(pseudo[b]) == k
        threshold = tau * p[k] / max(p)
        if abs(probs[b, k] - threshold) > 1e-5:   # skip float ties
            assert bool(mask[b]) == (probs[b, k] >= threshold)
    assert 0 < int(mask.sum()) < 40


# ---------------------------------------------------------------------------
# Prototypes and class-level alignment.


@pytest.mark.parametrize("b,d,c", [(5, 3, 2), (16, 6, 4)])
def test_class_sums_match_loop(b, d, c):
    rng = np.random.default_rng(b)
    feats = rng.standard_normal((b, d))
    labels = rng.integers(0, c, b)
    mask = rng.random(b) < 0.7
    sums, counts = class_sums(f32(feats),
                              np.asarray(labels), c, np.asarray(mask))
    want_sums, want_counts = np.zeros((c, d)), np.zeros(c)
    for i in range(b):
        if mask[i]:
            want_sums[labels[i]] += feats[i]
            want_counts[labels[i]] += 1
    np.testing.assert_allclose(np.asarray(sums), want_sums, rtol=RTOL,
                               atol=ATOL)
    np.testing.assert_array_equal(np.asarray(counts), want_counts)


def test_update_prototypes_cases():
    m = 0.9
    old = np.zeros((4, 2))
    old[0] = [1.0, 0.0]       # seen, present in the batch: EMA
    old[1] = [0.0, 1.0]       # seen, absent: kept
    # row 2: never seen, present: takes the batch mean; row 3: never, absent
    sums = np.array([[0.0, 4.0], [5.0, 5.0], [3.0, 3.0], [0.0, 0.0]])
    counts = np.array([2.0, 0.0, 3.0, 0.0])
    got = np.asarray(jax.jit(losses.update_prototypes)(
        f32(old), f32(sums),
        f32(counts), momentum=m))
    ema = np.array([0.9, 0.1 * 2.0])
    want = np.array([ema / np.linalg.norm(ema), [0.0, 1.0],
                     [1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 0.0]])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    init = losses.init_prototypes(4, 2)
    assert init.shape == (4, 2) and maxabs(init) == 0.0


def np_class_alignment(z, pseudo, mask, protos, temperature):
    logits = np.zeros((len(z), len(protos)))
    for i in range(len(z)):
        for k in range(len(protos)):
            nz, npk = np.linalg.norm(z[i]), np.linalg.norm(protos[k])
            logits[i, k] = (0.0 if npk == 0 else
                            np.dot(z[i], protos[k]) / (nz * npk)) / temperature
    return np_cross_entropy(logits, pseudo, 0.0, mask)


@pytest.mark.parametrize("seed", [0, 1])
def test_class_alignment_matches_loop_and_is_finite(seed):
    b, d, c = 12, 8, 5
    rng = np.random.default_rng(seed)
    z = unit_rows(rng, b, d)
    protos = rng.standard_normal((c, d))
    protos[1] = 0.0                      # a class never seen yet
    pseudo = rng.integers(0, c, b)
    pseudo[0] = 1                        # confident row on the unseen class
    mask = rng.random(b) < 0.6
    mask[0] = True
    args = (f32(z), np.asarray(pseudo),
            np.asarray(mask), f32(protos))
    np.testing.assert_allclose(
        float(class_alignment(*args, temperature=0.1)),
        np_class_alignment(z, pseudo, mask, protos, 0.1), rtol=RTOL)
    gz, gp = class_alignment_grad(*args, temperature=0.1)
    assert all_finite(gz) and maxabs(gz) > 0
    assert maxabs(gp) == 0.0    # prototypes are state
    # No confident row: exactly 0 with a finite (zero) gradient.
    empty = (args[0], args[1], np.zeros(b, bool), args[3])
    assert float(class_alignment(*empty, temperature=0.1)) == 0.0
    gz, _ = class_alignment_grad(*empty, temperature=0.1)
    assert all_finite(gz) and maxabs(gz) == 0.0


# ---------------------------------------------------------------------------
# MMD.


@pytest.mark.parametrize("n,m,d", [(3, 5, 6), (8, 8, 4)])
def test_mmd2_matches_loop(n, m, d):
    rng = np.random.default_rng(n * m + d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (rng.standard_normal((m, d)) + 0.5).astype(np.float32)
    mults = (0.25, 0.5, 1.0, 2.0, 4.0)
    np.testing.assert_allclose(float(mmd2(x, y)), np_mmd2(x, y, mults),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        float(mmd2(x, y, multipliers=(1.0, 3.0), bandwidth=2.5)),
        np_mmd2(x, y, (1.0, 3.0), gamma=2.5), rtol=1e-5, atol=1e-5)


def test_identical_far_rows_have_zero_mmd():
    # Identical rows far from the origin: ||a||^2 + ||b||^2 - 2ab rounds to
    # small negative distances on some seeds, which unclipped would give
    # kernels above 1 and a nonzero (or NaN) MMD.
    for seed in range(8):
        rng = np.random.default_rng(seed)
        z = np.tile(f32(rng.uniform(-50, 50, (1, 4))), (16, 1))
        assert abs(float(mmd2(z[:8], z[8:]))) < 1e-6


def test_mmd2_zero_for_identical_positive_for_shifted():
    rng = np.random.default_rng(9)
    x, x2 = f32(rng.standard_normal((8, 4))), f32(rng.standard_normal((8, 4)))
    same, near, far, fresh = (float(mmd2(x, x)), float(mmd2(x, x + 1.0)),
                              float(mmd2(x, x + 2.0)), float(mmd2(x, x2)))
    assert abs(same) < 1e-6
    assert 0.1 < near < far
    # A fresh draw of the same distribution (8 samples: the V-statistic's
    # positive bias is visible) stays well below a large shift.
    assert fresh < 0.25 * far


def test_mmd2_gradient_finite_and_bandwidth_has_no_gradient():
    rng = np.random.default_rng(10)
    x = f32(rng.standard_normal((8, 4)))
    y = f32(rng.standard_normal((8, 4)) + 0.3)
    gx, gy = mmd2_grad(x, y)
    assert all_finite((gx, gy)) and maxabs(gx) > 0
    # With gamma under stop_gradient, the gradient equals that of a fixed
    # bandwidth of the same value.
    gamma = np_median_sq_distance(np.concatenate([x, y]))
    fixed = mmd2_grad(x, y, bandwidth=gamma)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(fixed[0]),
                               rtol=1e-5, atol=1e-7)
    # Duplicate rows (zero distances) and a collapsed sample stay finite.
    dup = np.concatenate([x[:4], x[:4]])
    assert all_finite(mmd2_grad(dup, dup))
    zeros = np.zeros((8, 4), np.float32)
    assert all_finite(mmd2_grad(zeros, zeros))
    assert float(mmd2(zeros, zeros)) == 0.0


# ---------------------------------------------------------------------------
# Schedules and gradient reversal.


def test_ramp_values():
    ramp = jax.jit(losses.ramp)
    got = [float(ramp(p)) for p in (-3.0, 0.0, 0.5, 1.0, 7.0)]
    want = [0.0, 0.0, 2 / (1 + math.exp(-5)) - 1, 2 / (1 + math.exp(-10)) - 1,
            2 / (1 + math.exp(-10)) - 1]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-7)


def test_gradient_reversal():
    rng = np.random.default_rng(11)
    x = f32(rng.standard_normal((3, 4)))
    w = f32(rng.standard_normal((3, 4)))
    f = lambda v, c: jnp.sum(jnp.sin(losses.gradient_reversal(v, c)) * w)
    grads = jax.jit(jax.grad(f, argnums=(0, 1)))
    identity = jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(v) * w)))(x)
    for coefficient in (0.0, 0.3, 1.0, 2.5):
        np.testing.assert_array_equal(
            np.asarray(losses.gradient_reversal(x, coefficient)),
            np.asarray(x))
        gx, gc = grads(x, np.float32(coefficient))
        np.testing.assert_array_equal(
            np.asarray(gx), -np.float32(coefficient) * np.asarray(identity))
        assert float(gc) == 0.0
    # A Python-float coefficient and a bf16 input: the dtype is kept.
    xb = x.astype(jnp.bfloat16)
    gb = jax.jit(jax.grad(lambda v: jnp.sum(
        losses.gradient_reversal(v, 0.5).astype(jnp.float32))))(xb)
    assert gb.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(gb, np.float32),
                                  np.full((3, 4), -0.5, np.float32))


def _centroid_alignment_loop(x, labels, mask):
    """Between-group share of the scatter, with explicit loops (float64)."""
    rows = [i for i in range(len(x)) if mask[i] > 0]
    mean = np.mean([x[i] for i in rows], axis=0)
    total = sum(np.sum((x[i] - mean) ** 2) for i in rows)
    between = 0.0
    for k in set(labels[i] for i in rows):
        group = [x[i] for i in rows if labels[i] == k]
        between += len(group) * np.sum((np.mean(group, axis=0) - mean) ** 2)
    return between / total


def test_centroid_alignment_matches_loops_and_hand_cases():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 5))
    labels = rng.integers(0, 4, 12)
    mask = (rng.random(12) > 0.3).astype(np.float32)
    got = float(losses.centroid_alignment(f32(x), labels, 6, mask=mask))
    np.testing.assert_allclose(got, _centroid_alignment_loop(x, labels, mask), rtol=1e-5)
    np.testing.assert_allclose(
        float(losses.centroid_alignment(f32(x), labels, 4)),
        _centroid_alignment_loop(x, labels, np.ones(12)), rtol=1e-5)
    # Groups that differ only in their means: all scatter is between groups.
    two = f32([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    assert float(losses.centroid_alignment(two, np.array([0, 0, 1, 1]), 2)) == pytest.approx(1.0)
    # Identical centroids (each group symmetric about the origin): zero.
    same = f32([[1.0, 2.0], [-1.0, -2.0], [3.0, 0.0], [-3.0, 0.0]])
    assert float(losses.centroid_alignment(same, np.array([0, 0, 1, 1]), 2)) == pytest.approx(0.0, abs=1e-7)
    # A ratio: scaling the features changes nothing.
    np.testing.assert_allclose(
        float(losses.centroid_alignment(f32(7.0 * x), labels, 4)),
        float(losses.centroid_alignment(f32(x), labels, 4)), rtol=1e-5)


def test_posterior_logits_scale_only_a_cosine_classifier():
    cosines = f32([[0.5, -0.25, 1.0]])
    np.testing.assert_array_equal(losses.posterior_logits(cosines, "am", 30.0),
                                  30.0 * np.asarray(cosines))
    np.testing.assert_array_equal(losses.posterior_logits(cosines, "linear", 30.0),
                                  np.asarray(cosines))


def test_threshold_floor_raises_every_class_threshold_to_it():
    probs = jnp.asarray([[0.7, 0.2, 0.1], [0.2, 0.35, 0.45], [0.05, 0.9, 0.05]])
    # Adaptive thresholds 0.6 * (1, 0.5, 0.5) = (0.6, 0.3, 0.3).
    tau_g, p_tilde = jnp.float32(0.6), jnp.asarray([0.5, 0.25, 0.25])
    plain, _ = losses.confidence_mask(probs, tau_g, p_tilde)
    floored, pseudo = losses.confidence_mask(probs, tau_g, p_tilde, floor=0.8)
    np.testing.assert_array_equal(plain, [True, True, True])
    np.testing.assert_array_equal(floored, [False, False, True])
    np.testing.assert_array_equal(pseudo, [0, 2, 1])


def test_prototype_agreement_hand_worked():
    prototypes = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # class 2 unseen
    features = jnp.asarray([[2.0, 0.1], [0.3, 0.2], [-1.0, 0.5], [0.1, 3.0]])
    pseudo = jnp.asarray([0, 1, 2, 1])
    # Nearest by cosine: 0, 0, 1 (the unseen class has cosine 0 < 0.45), 1.
    np.testing.assert_array_equal(
        losses.prototype_agreement(features, prototypes, pseudo),
        [True, False, False, True])


def test_prediction_diversity_is_the_kl_of_the_mean_posterior_from_uniform():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mean = p.mean(0)
    want = float(np.sum(mean * np.log(mean / 0.25)))
    assert float(losses.prediction_diversity(logits)) == pytest.approx(want, rel=1e-5)
    # Rows confident in different classes, evenly: no penalty at all.
    spread = 30.0 * np.eye(4, dtype=np.float32)
    assert float(losses.prediction_diversity(spread)) == pytest.approx(0.0, abs=1e-6)
    # Every row confident in one class: the whole log C.
    collapsed = np.tile(30.0 * np.eye(4, dtype=np.float32)[:1], (4, 1))
    assert float(losses.prediction_diversity(collapsed)) == pytest.approx(np.log(4), rel=1e-5)


def test_grouped_diversity_pools_each_group_s_mass_against_its_share():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    # Every class alone: the plain term.
    assert float(losses.prediction_diversity(logits, groups=jnp.arange(4))) == (
        pytest.approx(float(losses.prediction_diversity(logits)), rel=1e-5))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mean = p.mean(0)
    # Class 2 joins class 1's group: (p1 + p2) is judged against 2/4.
    merged = mean[1] + mean[2]
    want = (mean[0] * np.log(mean[0] / 0.25) + merged * np.log(merged / 0.5)
            + mean[3] * np.log(mean[3] / 0.25))
    got = losses.prediction_diversity(logits, groups=jnp.array([0, 1, 1, 3]))
    assert float(got) == pytest.approx(want, rel=1e-5)
    # How a group's mass splits costs nothing: all of it on class 1 or on 2.
    one = np.tile(30.0 * np.eye(4, dtype=np.float32)[[0, 1, 1, 3]], (2, 1))
    other = np.tile(30.0 * np.eye(4, dtype=np.float32)[[0, 2, 2, 3]], (2, 1))
    for rows in (one, other):
        assert float(losses.prediction_diversity(rows, groups=jnp.array([0, 1, 1, 3]))
                     ) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.prediction_diversity(one)) > 0.3


