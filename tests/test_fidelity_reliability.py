"""Fidelity to the reference implementations (issue #14, items 10-15): OOD detection, calibration, estimation.

Every expected value is computed here, independently of cliplab, the way the official repository computes it.
"""

import numpy as np
import pytest
import torch
from sklearn.metrics import auc, roc_curve

from cliplab.metrics import ood_metrics

# -- item 12: FPR@95 conventions -------------------------------------------------------------------------


def _fpr_vim_reference(id_s, ood_s, tpr=0.95):
    # haoqiwang/vim benchmark.py fpr_recall: recall_num = floor(tpr·n); thresh = sort(ID)[-recall_num]
    recall_num = int(np.floor(tpr * len(id_s)))
    thresh = np.sort(id_s)[-recall_num]
    return np.sum(ood_s >= thresh) / max(1, len(ood_s))


def _fpr_mcm_reference(id_s, ood_s, level=0.95):
    # MCM / Hendrycks fpr_and_fdr_at_recall, ID positive, written as a loop over distinct thresholds
    points = []  # (recall, false positives) from the highest threshold down to the first with full recall
    for t in sorted(set(np.r_[id_s, ood_s].tolist()), reverse=True):
        rec = np.sum(id_s >= t) / len(id_s)
        points.append((rec, int(np.sum(ood_s >= t))))
        if rec == 1.0:
            break
    best = None
    for rec, fp in reversed(points):  # the reference scans from full recall downwards; first minimum wins
        if best is None or abs(rec - level) < abs(best[0] - level):
            best = (rec, fp)
    return best[1] / len(ood_s)


def _fpr_openood_reference(id_s, ood_s, tpr=0.95):
    # OpenOOD v1.5 metrics.py auc_and_fpr_recall: OOD positive, roc_curve(ood, -conf) as it calls it
    y = np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))]
    fpr, tprs, _ = roc_curve(y, -np.r_[id_s, ood_s])
    return fpr[np.argmax(tprs >= tpr)]


@pytest.mark.parametrize("seed", range(6))
def test_fpr95_each_reference_convention_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_in = [99, 101, 57, 20, 333, 19][seed]  # 0.95·n not an integer for most: the conventions differ
    id_s = np.round(rng.normal(1.0, 1.0, n_in) * 3) / 3  # heavy ties within and across the sets
    ood_s = np.round(rng.normal(0.0, 1.2, 80) * 3) / 3
    m = ood_metrics(id_s, ood_s)
    assert m["fpr95_vim"] == pytest.approx(_fpr_vim_reference(id_s, ood_s), abs=1e-12)
    assert m["fpr95_mcm"] == pytest.approx(_fpr_mcm_reference(id_s, ood_s), abs=1e-12)
    assert m["fpr95_openood"] == pytest.approx(_fpr_openood_reference(id_s, ood_s), abs=1e-12)


def test_fpr95_conventions_differ_where_the_references_do():
    id_s = np.arange(1.0, 100.0)  # 99 ID scores: ⌊94.05⌋ = 94 (ViM) vs ⌈94.05⌉ = 95 (cliplab's fpr95)
    ood_s = np.array([5.0, 5.5, 6.0, 50.0])
    m = ood_metrics(id_s, ood_s)
    assert m["fpr95_vim"] == pytest.approx(_fpr_vim_reference(id_s, ood_s)) == pytest.approx(2 / 4)  # t = 6
    assert m["fpr95"] == pytest.approx(4 / 4)  # t = 5
    assert m["fpr95_mcm"] == pytest.approx(_fpr_mcm_reference(id_s, ood_s))


# -- item 11: ViM's principal dimension in the assess pipeline ------------------------------------------


def _vim_reference_scores(train, W, test):
    # haoqiwang/vim benchmark.py with b = 0: DIM = 1000 if D >= 2048 else 512; eig of the covariance about u
    dim = 1000 if train.shape[1] >= 2048 else 512
    u = np.zeros(train.shape[1])
    cov = (train - u).T @ (train - u) / len(train)  # EmpiricalCovariance(assume_centered=True)
    vals, vecs = np.linalg.eigh(cov)  # the reference's eig spans the same subspaces of this symmetric matrix
    NS = np.ascontiguousarray(vecs.T[np.argsort(vals * -1)[dim:]].T)
    alpha = (train @ W.T).max(1).mean() / np.linalg.norm((train - u) @ NS, axis=1).mean()
    z = test @ W.T
    energy = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return energy - alpha * np.linalg.norm((test - u) @ NS, axis=1)


def test_assess_vim_uses_the_official_dimension_for_768d_features():
    from sklearn.metrics import roc_auc_score

    from cliplab import Features
    from cliplab.assess import ood_evaluation

    rng = np.random.default_rng(0)
    d, c = 768, 5
    scales = np.r_[np.full(c, 3.0), np.linspace(1.0, 0.05, d - c)]
    W = np.eye(d)[:c]
    train = rng.normal(size=(1200, d)) * scales
    test = rng.normal(size=(100, d)) * scales
    ood = rng.normal(size=(100, d)) * scales[::-1]  # variance in the low-variance directions
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    train, test, ood = norm(train), norm(test), norm(ood)
    res = ood_evaluation(
        Features(images=torch.tensor(test, dtype=torch.float32)),
        {"ood": Features(images=torch.tensor(ood, dtype=torch.float32))},
        torch.tensor(W, dtype=torch.float32),
        100.0,
        train_features=Features(images=torch.tensor(train, dtype=torch.float32)),
        methods=["vim"],
    )
    assert res["vim_dim"] == 512  # not D/2 = 384
    s_in, s_out = _vim_reference_scores(train, 100.0 * W, test), _vim_reference_scores(train, 100.0 * W, ood)
    expected = roc_auc_score(np.r_[np.ones(100), np.zeros(100)], np.r_[s_in, s_out])
    assert res["sets"]["ood"]["vim"]["auroc"] == pytest.approx(expected, abs=2e-3)


# -- item 13: MaNo's branch decided once ----------------------------------------------------------------


def _mano_reference(q, use_softmax, p=4):
    # Renchunzi-Xie/MaNo: softmax or the Taylor "softrun" 1 + q + q²/2 shifted to its row minimum, L1-normalised
    if use_softmax:
        e = np.exp(q - q.max(1, keepdims=True))
        sigma = e / e.sum(1, keepdims=True)
    else:
        v = 1 + q + q**2 / 2
        v = v - v.min(1, keepdims=True)
        sigma = v / np.abs(v).sum(1, keepdims=True)
    return np.mean(np.abs(sigma) ** p) ** (1 / p)


def _phi(q):
    return np.mean(-(q - q.max(1, keepdims=True) - np.log(np.exp(q - q.max(1, keepdims=True)).sum(1, keepdims=True))))


def test_mano_branch_is_decided_on_validation_and_reused_for_every_set():
    from cliplab.estimate import evaluate_estimators

    rng = np.random.default_rng(0)
    k, n = 10, 400
    labels = rng.integers(0, k, n)

    def logits(scale, noise):
        q = rng.normal(size=(n, k)) * noise
        q[np.arange(n), labels] += 1.0
        return q * scale

    val = logits(1.5, 1.0)
    sets = [(f"s{i}", logits(scale, 1.0 + 0.2 * i), labels) for i, scale in enumerate((1.0, 2.0, 3.0, 5.0, 8.0))]
    phis = [_phi(q) for _, q, _ in sets]
    assert _phi(val) < 5 and min(phis) < 5 < max(phis)  # the sets straddle eta; validation is on the Taylor side
    res = evaluate_estimators(sets, val, labels, ["mano"])
    got = res["estimators"]["mano"]["estimates"]
    for name, q, _ in sets:
        assert got[name] == pytest.approx(_mano_reference(q, use_softmax=False), rel=1e-9), name
    assert res["protocol"]["mano"]["branch"] == "taylor"
    assert res["protocol"]["mano"]["phi_val"] == pytest.approx(_phi(val))


# -- items 14-15: MaxLogit-pNorm and AURC as lfpc/FixSelectiveClassification ----------------------------


def _aurc_reference(risk, confidence):
    # utils/metrics.py RC_curve (coverages k/n, risks cumsum/k, the point (0, 0) prepended) + sklearn auc
    order = np.argsort(-confidence, kind="stable")
    loss = np.asarray(risk, dtype=np.float64)[order]
    n = len(loss)
    coverages = np.arange(1, n + 1) / n
    risks = np.cumsum(loss) / n / coverages
    return auc(np.r_[0.0, coverages], np.r_[0.0, risks])


def _maxlogit_pnorm_reference(z, y, p_range=range(10)):
    # post_hoc.py MaxLogit_p(p="optimal", msp_fallback=True, centralize_logits=True), in float64
    z = torch.as_tensor(z, dtype=torch.float64)
    zc = z - z.mean(-1).view(-1, 1)
    risk = (z.argmax(1) != torch.as_tensor(y)).double().numpy()

    def conf(x, p):
        return (x if p == 0 else torch.nn.functional.normalize(x, p, -1)).max(-1).values.numpy()

    vals = [_aurc_reference(risk, conf(zc, p)) for p in p_range]
    p = list(p_range)[int(np.argmin(vals))]
    msp = zc.softmax(-1).max(-1).values.numpy()
    if vals[int(np.argmin(vals))] > _aurc_reference(risk, msp):
        return None, vals
    return p, vals


def test_aurc_trapezoid_matches_the_reference_integration():
    from cliplab.metrics.calibration import aurc

    rng = np.random.default_rng(0)
    conf = rng.random(500)
    correct = rng.random(500) < conf
    assert aurc(conf, correct, integration="trapezoid") == pytest.approx(_aurc_reference(~correct, conf), abs=1e-12)
    with pytest.raises(ValueError, match="integration"):
        aurc(conf, correct, integration="simpson")


@pytest.mark.parametrize("case", ["broken", "msp_better"])
def test_maxlogit_pnorm_matches_the_reference(case):
    from cliplab.metrics.calibration import LogitNormConfidence

    g = torch.Generator().manual_seed(3)
    n, k = 800, 10
    z = torch.randn(n, k, generator=g, dtype=torch.float64) + 3.0  # an offset the centring removes
    y = torch.randint(0, k, (n,), generator=g)
    if case == "broken":  # wrong predictions get large logit norms (label-smoothing-like)
        z[z.argmax(1) != y] *= 4
    else:  # confidence lives in the top-2 gap only, which MSP reads and the norms hardly see
        top = z.argmax(1)
        y = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, top, y)
        gap = (z.topk(2, 1).values[:, 0] - z.topk(2, 1).values[:, 1])[:, None]
        z = z + 6.0 * torch.nn.functional.one_hot(top, k) * (z.argmax(1) == y)[:, None] * gap
    p_ref, vals = _maxlogit_pnorm_reference(z, y)
    est = LogitNormConfidence().fit(z.float(), y)
    assert est.p_ == p_ref
    np.testing.assert_allclose([est.aurc_[float(p)] for p in range(10)], vals, rtol=1e-6, atol=1e-9)
    assert est.method_ == ("msp" if p_ref is None else "maxlogit_pnorm")
    assert (p_ref is None) == (case == "msp_better")  # each branch of the reference is exercised
    test = torch.randn(50, k, generator=g, dtype=torch.float64) * 2
    if p_ref is None:
        expected = test.softmax(1).max(1).values
    else:
        tc = test - test.mean(1, keepdim=True)
        expected = (tc if p_ref == 0 else torch.nn.functional.normalize(tc, p_ref, -1)).max(1).values
    np.testing.assert_allclose(est.score(test).numpy(), expected.numpy(), rtol=1e-9)
    assert est.score(test).dtype == torch.float64


# -- item 15: ATC as Garg et al.'s ATC_code ------------------------------------------------------------


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _nll_temperature(z, y):
    from scipy.optimize import minimize_scalar

    def nll(log_t):
        logp = np.log(_softmax(z / np.exp(log_t)))
        return -logp[np.arange(len(y)), y].mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10}).x))


def _find_threshold_balance(scores, correct):
    # ATC_code predictAcc_helper.find_threshold_balance (labels = correct), with a stable sort
    order = np.argsort(scores, kind="stable")
    s, lab = scores[order], correct[order]
    fp, fn = np.sum(~correct), 0.0
    best, thres = abs(fp - fn), 0.0
    for i in range(len(lab)):
        if not lab[i]:
            fp -= 1
        else:
            fn += 1
        if abs(fp - fn) < best:
            best, thres = abs(fp - fn), s[i]
    return thres


def _atc_reference(zv, yv, z, score, T):
    pv, pt = _softmax(zv / T), _softmax(z / T)
    if score == "maxconf":
        sv, st = pv.max(1), pt.max(1)
    else:  # get_entropy: Σ p log(p + 1e-20)
        sv, st = (pv * np.log(pv + 1e-20)).sum(1), (pt * np.log(pt + 1e-20)).sum(1)
    thres = _find_threshold_balance(sv, pv.argmax(1) == yv)
    return np.mean(st >= thres)


@pytest.mark.parametrize("score", ["maxconf", "entropy"])
def test_atc_threshold_on_temperature_scaled_logits_as_the_reference(score):
    from cliplab.estimate import atc, atc_temperature

    rng = np.random.default_rng(1)
    k = 6
    yv = rng.integers(0, k, 500)
    zv = rng.normal(size=(500, k)) * 4  # over-confident: the fitted temperature is far from 1
    zv[np.arange(500), yv] += 3.0
    z = rng.normal(size=(300, k)) * 5
    T = _nll_temperature(zv, yv)
    assert abs(T - 1) > 0.3
    assert atc_temperature(zv, yv) == pytest.approx(T, rel=1e-4)
    # with the reference's temperature the share above the threshold is the reference's exactly
    assert atc(zv, yv, z, score=score, temperature=T) == pytest.approx(_atc_reference(zv, yv, z, score, T), abs=1e-12)
    # the default fits the temperature itself: equal up to a sample or two moved by the 1e-4 in T
    assert atc(zv, yv, z, score=score) == pytest.approx(_atc_reference(zv, yv, z, score, T), abs=2.5 / 300)
    # raw logits give a different estimate: the temperature matters
    assert atc(zv, yv, z, score=score, temperature=None) != pytest.approx(_atc_reference(zv, yv, z, score, T), abs=0.02)


# -- item 10: NegLabel's full recipe ---------------------------------------------------------------------

_LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by\n  2 Princeton University\n"


def _write_wordnet(root, nouns, adjectives):
    root.mkdir()
    for pos, words, tag in (("noun", nouns, "n"), ("adj", adjectives, "a")):
        lines = [f"{w} {tag} 1 1 @ 1 0 00000000  " for w in sorted(words)]
        (root / f"index.{pos}").write_text(_LICENCE + "\n".join(lines) + "\n")
    return root


def _hash_encoder(dim=12):
    def encode(texts):
        seeds = [sum((i + 1) * b for i, b in enumerate(t.encode())) for t in texts]
        return torch.tensor(np.array([np.random.default_rng(s).normal(size=dim) for s in seeds]), dtype=torch.float32)

    return encode


@pytest.mark.skipif(not __import__("pathlib").Path("/usr/share/wordnet/index.noun").is_file(), reason="no wordnet-base")
def test_wordnet_pool_is_the_single_word_nouns_and_adjectives():
    from cliplab.ood.wordnet import find_wordnet, wordnet_words

    def single_words(path):  # every non-licence line's first field, without the '_' collocations
        return {ln.split(" ", 1)[0] for ln in open(path) if not ln.startswith(" ") and "_" not in ln.split(" ", 1)[0]}

    nouns, adjectives = wordnet_words("noun", "/usr/share/wordnet"), wordnet_words("adj", "/usr/share/wordnet")
    assert set(nouns) == single_words("/usr/share/wordnet/index.noun") and len(nouns) == 57506
    assert set(adjectives) == single_words("/usr/share/wordnet/index.adj") and len(adjectives) == 20983
    assert len(nouns) + len(adjectives) == 78489  # "about 79k words" (issue #14)
    assert find_wordnet() is not None
    with pytest.raises(FileNotFoundError, match="not a WordNet dict directory"):
        find_wordnet("/nonexistent")


def test_neglabel_mines_nouns_and_adjectives_separately_with_their_templates(tmp_path):
    from cliplab.ood import NegLabel

    nouns = [f"noun{i}" for i in range(60)] + ["bright"]
    adjectives = [f"adj{i}" for i in range(40)] + ["bright"]  # listed as both: kept once, as a noun
    root = _write_wordnet(tmp_path / "dict", nouns, adjectives)
    seen = []
    enc = _hash_encoder()

    def encode(texts):
        seen.extend(texts)
        return enc(texts)

    rng = np.random.default_rng(0)
    id_w = rng.normal(size=(4, 12))
    nl = NegLabel(wordnet_root=str(root), ngroup=2).fit(id_w, encode)
    noun_prompts = [f"The nice {w}." for w in sorted(nouns)]
    adj_prompts = [f"This is a {w} photo" for w in sorted(adjectives) if w != "bright"]
    assert seen == noun_prompts + adj_prompts
    assert nl.source_ == f"WordNet ({root})" and nl.n_candidates_ == 101
    # the reference: 95th-percentile cosine to the ID labels; the lowest 15% of each part of speech, nouns first
    idn = id_w / np.linalg.norm(id_w, axis=1, keepdims=True)
    chosen = []
    adj_words = [w for w in sorted(adjectives) if w != "bright"]
    for prompts, words in ((noun_prompts, sorted(nouns)), (adj_prompts, adj_words)):
        emb = enc(prompts).numpy()
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        affinity = np.quantile(emb @ idn.T, 0.95, axis=1)
        chosen += [words[i] for i in np.argsort(affinity, kind="stable")[: int(len(words) * 0.15)]]
    assert len(chosen) == 9 + 6
    expected = chosen[: len(chosen) - len(chosen) % 2]  # ngroup = 2: the last one dropped, as the reference
    assert nl.negative_words_ == expected


def test_neglabel_offline_fallback_is_named_in_the_results(monkeypatch):
    from cliplab import Features
    from cliplab.assess import ood_evaluation
    from cliplab.ood import BUILTIN_SOURCE
    from cliplab.ood import wordnet as wn

    monkeypatch.delenv("CLIPLAB_WORDNET", raising=False)
    monkeypatch.setattr(wn, "_candidates", lambda: [])  # no WordNet installed
    enc = _hash_encoder()
    seen = []

    def encode(texts):
        seen.extend(texts)
        return enc(texts)

    g = torch.Generator().manual_seed(0)
    res = ood_evaluation(
        Features(images=torch.randn(20, 12, generator=g), labels=torch.arange(20) % 3, classnames=["cat", "dog", "ow"]),
        {"far": Features(images=torch.randn(20, 12, generator=g))},
        torch.randn(3, 12, generator=g),
        100.0,
        encode_texts=encode,
        methods=["neglabel"],
    )
    assert res["neglabel"]["source"] == BUILTIN_SOURCE
    assert res["neglabel"]["id_prompts"] == "The nice {}."
    assert seen[:3] == ["The nice cat.", "The nice dog.", "The nice ow."]  # the ID classes, the reference's template
    with pytest.raises(FileNotFoundError, match="WordNet not found"):
        ood_evaluation(
            Features(images=torch.randn(4, 12, generator=g)),
            {"far": Features(images=torch.randn(4, 12, generator=g))},
            torch.randn(3, 12, generator=g),
            100.0,
            encode_texts=encode,
            methods=["neglabel"],
            neglabel_options={"source": "wordnet"},
        )
