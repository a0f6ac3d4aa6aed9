"""How much personalization headroom POPQUORN offensiveness comparisons hold, without any encoder.

Every comparison (user u, comments a, b) is labelled by u's own 1-5 offensiveness ratings (the
less offensive comment is chosen). All "crowd" quantities are computed from the raw ratings of the
OTHER annotators of the same comment (leave-user-out, ~7.7 others per comment), so u's labels never
inform a prediction for u. Every figure is averaged per user first, then over users, with a 95%
percentile bootstrap CI over users (paired where two predictors are compared). A crowd tie scores 0.5.

1. Data-level ceiling of a population model (no features):
   crowd_mean   - predict the comment whose leave-user-out mean rating is lower. This is what a
                  population (non-personalized) model that knew the crowd's view of these very texts
                  would score; `bt` on MiniLM features reaches ~0.735 (issue 13, not recomputed here).
   one_other    - expected agreement with ONE random other annotator per comment (ratings drawn
                  independently from each comment's other raters; rating ties score 0.5): inter-rater
                  agreement, a measure of how noisy single judgements are.
2. Is the deviation from the crowd a stable trait? Per user, R random splits of the user's comments
   into two halves; half A / half B keep the comparisons whose two comments both fall in that half
   (no comment in both). corr_raw: correlation across users of crowd_mean agreement in A vs in B
   (mean over splits); corr_adj: the same after subtracting each comparison's expected agreement
   given the crowd margin |Δmean| (a pooled logistic), so that users with easier comparisons do not
   create a spurious "trait". Per-user models (L2-MAP logistic, no intercept, antisymmetric features,
   prior mean = the population weights fitted on other users by 5 user folds, precision lam):
     2-param: Δ crowd mean, Δ crowd std (an "offensiveness tolerance / controversy" rater);
     6-param: + Δ(women - men mean), Δ(age>=45 - age<45 mean), Δ(White - non-White mean),
              Δ log length.
   Each is fitted on half A and scored on half B against crowd_mean and the population model on the
   same half-B comparisons (paired CI). The best lam in hindsight is reported as an optimistic bound.
   Positive control (power check): synthetic labels on the same comparisons from per-user weights
   w_pop + N(0, (0.5|w_pop[0]|)^2) on the 5 non-mean features; the same 6-param pipeline must beat
   the population model there, so a null on real users is not a lack of power of the procedure.
3. Demographic group prior: predict with the leave-user-out mean of the user's own group (gender;
   age 18-34 / 35-59 / 60+; White / non-White; college degree or not) versus the whole crowd, and
   versus a size-matched random subset of the crowd (same number of raters per comment as the
   group has; mean of D draws), which separates demographic signal from having fewer raters.
   Comparisons where a comment has no other in-group rater fall back to the crowd (rate reported).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data/popquorn")
BT_REFERENCE = 0.735  # bt new-item, per-user averaged, issue 13 measurements
LAMS = (0.1, 1.0, 10.0, 100.0)


def load(pairs_path: Path, raw_path: Path):
    rows = list(csv.DictReader(open(raw_path, encoding="utf-8")))
    users = sorted({r["user_id"] for r in rows}, key=int)
    items = sorted({int(r["instance_id"]) for r in rows})
    ui, ti = {u: i for i, u in enumerate(users)}, {t: i for i, t in enumerate(items)}
    R = np.full((len(users), len(items)), np.nan)
    length = np.zeros(len(items))
    demo = {}
    for r in rows:
        R[ui[r["user_id"]], ti[int(r["instance_id"])]] = float(r["offensiveness"])
        length[ti[int(r["instance_id"])]] = np.log(len(r["text"]) + 1)
        demo[ui[r["user_id"]]] = r
    age_lo = np.array([int(demo[i]["age"].strip(">").split("-")[0]) for i in range(len(users))])
    col = lambda k: np.array([demo[i][k] for i in range(len(users))])  # noqa: E731
    groups = {
        "gender": col("gender"),
        "age": np.where(age_lo < 35, "18-34", np.where(age_lo < 60, "35-59", "60+")),
        "race": np.where(col("race") == "White", "White", "non-White"),
        "education": np.where(np.char.find(col("education"), "degree") >= 0, "degree", "no degree"),
    }
    pu, pa, pb, y = [], [], [], []
    for line in open(pairs_path, encoding="utf-8"):
        p = json.loads(line)
        c, r = ti[p["meta"]["chosen_instance_id"]], ti[p["meta"]["rejected_instance_id"]]
        a, b = min(c, r), max(c, r)  # canonical order; y = 1 if the user preferred a
        pu.append(ui[p["user_id"]]), pa.append(a), pb.append(b), y.append(float(a == c))
    return R, length, groups, age_lo, np.array(pu), np.array(pa), np.array(pb), np.array(y)


def loo_stats(R, mask, u, t):
    """Leave-user-out mean and std of item t's ratings among users in mask (excluding u)."""
    V = np.where(mask[:, None], R, np.nan)
    s, s2, n = np.nansum(V, 0), np.nansum(V**2, 0), np.sum(~np.isnan(V), 0)
    own = np.where(mask[u], R[u, t], 0.0)
    own = np.nan_to_num(own)
    n_ = n[t] - (mask[u] & ~np.isnan(R[u, t]))
    with np.errstate(invalid="ignore", divide="ignore"):
        m = (s[t] - own) / n_
        sd = np.sqrt(np.maximum((s2[t] - own**2) / n_ - m**2, 0))
    return m, sd, n_


def score(margin, y):
    """margin > 0 predicts a preferred; 1 if right, 0 if wrong, 0.5 on a tie."""
    return np.where(margin == 0, 0.5, (margin > 0) == (y == 1)).astype(float)


def per_user(v, pu, n_users):
    ok = ~np.isnan(v)
    s = np.bincount(pu[ok], v[ok], n_users)
    c = np.bincount(pu[ok], minlength=n_users)
    with np.errstate(invalid="ignore"):
        return s / c


def boot(x, rng, B=2000, stat=np.nanmean):
    x = np.asarray(x)
    n = x.shape[0]
    idx = rng.integers(0, n, (B, n))
    vals = np.array([stat(x[i]) for i in idx])
    return {
        "mean": float(stat(x)),
        "ci95": [float(np.nanpercentile(vals, 2.5)), float(np.nanpercentile(vals, 97.5))],
    }


def fit_logistic(X, y, w_mask, prior, lam, iters=30):
    """Batched L2-MAP logistic (no intercept): X (B,n,d), y (B,n), w_mask (B,n), prior (B,d)."""
    B, _, d = X.shape
    w = prior.copy()
    eye = np.eye(d)[None]
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(np.einsum("bnd,bd->bn", X, w), -30, 30)))
        g = np.einsum("bnd,bn->bd", X, w_mask * (p - y)) + lam * (w - prior)
        H = np.einsum("bnd,bn,bne->bde", X, w_mask * p * (1 - p), X) + lam * eye
        w = w - np.linalg.solve(H, g[..., None])[..., 0]
    return w


def corr(x):
    """Mean over splits of the across-user correlation of columns 0 and 1; x (users, splits, 2)."""
    out = []
    for s in range(x.shape[1]):
        a, b = x[:, s, 0], x[:, s, 1]
        ok = ~np.isnan(a) & ~np.isnan(b)
        out.append(np.corrcoef(a[ok], b[ok])[0, 1])
    return float(np.mean(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=Path, default=DATA / "pairs.jsonl")
    ap.add_argument("--raw", type=Path, default=DATA / "offensiveness" / "raw_data.csv")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/popquorn_headroom.json"))
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    R, length, groups, age_lo, pu, pa, pb, y = load(args.pairs, args.raw)
    nU, nP = R.shape[0], len(y)
    allu = np.ones(nU, bool)
    res = {
        "n_users": nU,
        "n_pairs": nP,
        "bt_reference_not_computed_here": BT_REFERENCE,
        "seed": args.seed,
    }

    def U(v):
        return per_user(v, pu, nU)

    # ---- 1. crowd ceiling
    ma, sa, na = loo_stats(R, allu, pu, pa)
    mb, sb, nb = loo_stats(R, allu, pu, pb)
    crowd = score(mb - ma, y)
    H = np.zeros((2, nP, 5))  # leave-user-out rating histograms of a and b
    for k, t in enumerate((pa, pb)):
        for lvl in range(5):
            H[k, :, lvl] = np.sum(R[:, t] == lvl + 1, 0) - (R[pu, t] == lvl + 1)
    Pa, Pb = H[0] / H[0].sum(1, keepdims=True), H[1] / H[1].sum(1, keepdims=True)
    cum_b = np.cumsum(Pb, 1)
    p_a_lower = np.sum(Pa * (1 - cum_b), 1)  # P(x_a < x_b) for one random rater of each
    p_tie = np.sum(Pa * Pb, 1)
    one_other = np.where(y == 1, p_a_lower, 1 - p_a_lower - p_tie) + 0.5 * p_tie
    res["fig1"] = {
        "crowd_mean": boot(U(crowd), rng),
        "crowd_mean_pooled": float(crowd.mean()),
        "crowd_tie_rate": float(np.mean(mb == ma)),
        "one_other": boot(U(one_other), rng),
        "crowd_minus_bt_reference": float(np.nanmean(U(crowd)) - BT_REFERENCE),
        "others_per_comment_mean": float(np.mean(np.r_[na, nb])),
    }

    # ---- 2. stability of the deviation and per-user models on top of the crowd
    def subdiff(m1, m2):  # leave-user-out Δ(b - a) of group-1 mean minus group-2 mean
        d = [loo_stats(R, m, pu, pb)[0] - loo_stats(R, m, pu, pa)[0] for m in (m1, m2)]
        return np.nan_to_num(d[0] - d[1])

    g = groups["gender"]
    feats = np.stack(
        [
            mb - ma,
            sb - sa,
            subdiff(g == "Woman", g == "Man"),
            subdiff(age_lo >= 45, age_lo < 45),
            subdiff(groups["race"] == "White", groups["race"] != "White"),
            length[pb] - length[pa],
        ],
        1,
    )
    feats = feats / feats.std(0)  # positive weight on column 0: b more offensive -> a preferred
    absm = np.abs(mb - ma)
    Xd = np.stack([absm, np.ones(nP)], 1)[None]
    right, untied = (crowd > 0.5)[None] * 1.0, (crowd != 0.5)[None] * 1.0
    wd = fit_logistic(Xd, right, untied, np.zeros((1, 2)), 1e-3)
    expected = np.where(crowd == 0.5, 0.5, 1 / (1 + np.exp(-Xd[0] @ wd[0])))
    fold = rng.permutation(nU) % 5
    w_pop = {}
    for name, d in (("2param", 2), ("6param", 6)):
        w_pop[name] = np.zeros((nU, d))
        for f in range(5):
            tr = fold[pu] != f
            X1, y1 = feats[tr, :d][None], y[tr][None]
            w = fit_logistic(X1, y1, np.ones_like(y1), np.zeros((1, d)), 1e-3)
            w_pop[name][fold == f] = w[0]
    # per (user, split) padded arrays
    S, byu = args.splits, [np.flatnonzero(pu == u) for u in range(nU)]
    maxn = max(len(i) for i in byu)
    idx = np.zeros((nU, S, 2, maxn), int)
    msk = np.zeros((nU, S, 2, maxn))
    for u in range(nU):
        its = np.unique(np.r_[pa[byu[u]], pb[byu[u]]])
        for s in range(S):
            A = set(rng.permutation(its)[: len(its) // 2].tolist())
            ina = np.array([pa[i] in A for i in byu[u]])
            inb = np.array([pb[i] in A for i in byu[u]])
            for h, keep in enumerate((ina & inb, ~ina & ~inb)):
                k = byu[u][keep]
                idx[u, s, h, : len(k)], msk[u, s, h, : len(k)] = k, 1
    n_half = msk.sum(-1)

    def half_mean(v):
        return np.where(n_half > 0, (v[idx] * msk).sum(-1) / np.maximum(n_half, 1), np.nan)

    agree, resid = half_mean(crowd), half_mean(crowd - expected)
    ui = np.arange(nU)
    res["fig2"] = {
        "splits": S,
        "pairs_per_half_mean": float(n_half.mean()),
        "crowd_agreement_halfA": boot(np.nanmean(agree[..., 0], 1), rng),
        "corr_raw": boot(ui, rng, B=500, stat=lambda i: corr(agree[i])),
        "corr_adj": boot(ui, rng, B=500, stat=lambda i: corr(resid[i])),
    }
    tA, tB = idx[:, :, 0].reshape(nU * S, maxn), idx[:, :, 1].reshape(nU * S, maxn)
    mA, mB = msk[:, :, 0].reshape(nU * S, maxn), msk[:, :, 1].reshape(nU * S, maxn)

    def masked_mean(v, m):  # per (user, split) mean over the half's comparisons
        return np.where(m.sum(1) > 0, (v * m).sum(1) / np.maximum(m.sum(1), 1), np.nan)

    def keepB(v):  # per user: mean over splits of half-B accuracy
        return np.nanmean(masked_mean(v, mB).reshape(nU, S), 1)

    crowd_B = keepB(crowd[tB])
    res["fig2"]["crowd_mean_halfB"] = boot(crowd_B, rng)
    for name, d in (("2param", 2), ("6param", 6)):
        prior = np.repeat(w_pop[name], S, 0)
        XA, XB = feats[tA, :d], feats[tB, :d]
        pop_B = keepB(score(np.einsum("bnd,bd->bn", XB, prior), y[tB]))
        out = {
            "population_halfB": boot(pop_B, rng),
            "population_minus_crowd": boot(pop_B - crowd_B, rng),
        }
        best = None
        for lam in LAMS:
            w = fit_logistic(XA, y[tA], mA, prior, lam)
            acc_B = keepB(score(np.einsum("bnd,bd->bn", XB, w), y[tB]))
            accA = masked_mean(score(np.einsum("bnd,bd->bn", XA, w), y[tA]), mA)
            out[f"lam={lam:g}"] = {
                "per_user_halfB": boot(acc_B, rng),
                "per_user_minus_crowd": boot(acc_B - crowd_B, rng),
                "per_user_minus_population": boot(acc_B - pop_B, rng),
                "train_halfA": float(np.nanmean(np.nanmean(accA.reshape(nU, S), 1))),
            }
            if best is None or np.nanmean(acc_B) > best[1]:
                best = (lam, float(np.nanmean(acc_B)))
        out["best_lam_in_hindsight"] = best[0]
        res["fig2"][name] = out
    # positive control: synthetic users with real per-user directions on the same comparisons
    wp = w_pop["6param"]
    w_u = wp + rng.normal(0, 1, wp.shape) * np.r_[0, np.ones(5)] * 0.5 * np.abs(wp[:, :1])
    y_sim = (rng.random(nP) < 1 / (1 + np.exp(-np.sum(feats * w_u[pu], 1)))).astype(float)
    XA, XB, prior = feats[tA], feats[tB], np.repeat(wp, S, 0)
    pop_B = keepB(score(np.einsum("bnd,bd->bn", XB, prior), y_sim[tB]))
    orc_B = keepB(score(np.einsum("bnd,bd->bn", XB, np.repeat(w_u, S, 0)), y_sim[tB]))
    ctl = {
        "delta_sd": "0.5*|w_pop[0]| on the 5 non-mean features",
        "oracle_minus_population": boot(orc_B - pop_B, rng),
    }
    for lam in LAMS:
        w = fit_logistic(XA, y_sim[tA], mA, prior, lam)
        acc_B = keepB(score(np.einsum("bnd,bd->bn", XB, w), y_sim[tB]))
        ctl[f"lam={lam:g}_minus_population"] = boot(acc_B - pop_B, rng)
    res["fig2"]["positive_control_6param"] = ctl

    # ---- 3. demographic group prior vs whole crowd vs size-matched random crowd subset
    nR = R.shape[1]
    raters = [np.flatnonzero(~np.isnan(R[:, t])) for t in range(nR)]
    mr = max(len(r) for r in raters)
    rat_u = np.full((nR, mr), -1)
    for t, r in enumerate(raters):
        rat_u[t, : len(r)] = r
    res["fig3"] = {"draws": args.draws}
    for attr, lab in groups.items():
        m_g = {k: np.zeros(nP) for k in "ab"}
        n_g = {k: np.zeros(nP, int) for k in "ab"}
        for val in np.unique(lab):
            sel = lab[pu] == val
            for k, t in (("a", pa), ("b", pb)):
                m, _, n = loo_stats(R, lab == val, pu, t)
                m_g[k][sel], n_g[k][sel] = m[sel], n[sel]
        fallback = (n_g["a"] == 0) | (n_g["b"] == 0)
        grp = np.where(fallback, crowd, score(m_g["b"] - m_g["a"], y))
        ctrl = np.zeros(nP)
        for _ in range(args.draws):
            mm = {}
            for k, t in (("a", pa), ("b", pb)):
                ru = rat_u[t]
                key = np.where((ru < 0) | (ru == pu[:, None]), np.inf, rng.random(ru.shape))
                order = np.argsort(key, 1)
                take = np.arange(mr)[None] < n_g[k][:, None]
                vals = R[np.take_along_axis(ru, order, 1), t[:, None]]
                mm[k] = np.where(take, vals, 0).sum(1) / np.maximum(n_g[k], 1)
            ctrl += np.where(fallback, crowd, score(mm["b"] - mm["a"], y)) / args.draws
        res["fig3"][attr] = {
            "groups": {str(v): int((lab == v).sum()) for v in np.unique(lab)},
            "fallback_rate": float(fallback.mean()),
            "in_group_raters_mean": float(
                np.mean(np.r_[n_g["a"], n_g["b"]][~np.r_[fallback, fallback]])
            ),
            "group": boot(U(grp), rng),
            "group_minus_crowd": boot(U(grp) - U(crowd), rng),
            "size_matched_random": boot(U(ctrl), rng),
            "group_minus_size_matched": boot(U(grp) - U(ctrl), rng),
        }
    res["runtime_s"] = round(time.time() - t0, 1)
    report(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")


def report(res):
    def f(d):
        return f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"

    print(
        f"POPQUORN headroom: {res['n_users']} users, {res['n_pairs']} pairs (bt reference {BT_REFERENCE})"
    )
    f1 = res["fig1"]
    print(
        f"1 crowd_mean agreement          {f(f1['crowd_mean'])}  (ties {f1['crowd_tie_rate']:.3f})"
    )
    print(f"1 one random other rater        {f(f1['one_other'])}")
    f2 = res["fig2"]
    print(f"2 halves: {f2['pairs_per_half_mean']:.1f} pairs/half, {f2['splits']} splits")
    print(f"2 corr(agreement A, B) raw      {f(f2['corr_raw'])}")
    print(f"2 corr adjusted for difficulty  {f(f2['corr_adj'])}")
    print(f"2 crowd on half B               {f(f2['crowd_mean_halfB'])}")
    for name in ("2param", "6param"):
        o = f2[name]
        print(f"2 {name} population - crowd    {f(o['population_minus_crowd'])}")
        for lam in LAMS:
            r = o[f"lam={lam:g}"]
            print(
                f"2 {name} per-user lam={lam:<5g} - crowd {f(r['per_user_minus_crowd'])}"
                f"  - pop {f(r['per_user_minus_population'])}  train A {r['train_halfA']:.3f}"
            )
    pc = f2["positive_control_6param"]
    print(f"2 control: synthetic users, oracle - pop {f(pc['oracle_minus_population'])}")
    for lam in LAMS:
        print(f"2 control: per-user lam={lam:<5g} - pop {f(pc[f'lam={lam:g}_minus_population'])}")
    for attr, r in res["fig3"].items():
        if isinstance(r, dict):
            print(
                f"3 {attr:<9} group - crowd {f(r['group_minus_crowd'])}  group - size-matched "
                f"{f(r['group_minus_size_matched'])}  fallback {r['fallback_rate']:.2f}"
            )
    print(f"runtime {res['runtime_s']} s")


if __name__ == "__main__":
    main()
