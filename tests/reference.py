"""A dense NumPy reference of the scJMT objective and its gradients: plain, readable, slow.

Written straight from the formulas of docs/model.md (the objective, the entropy term included) with
every residual formed densely, so it shares no code with the factored,
sparse implementation it checks.
"""

import numpy as np


def softmax(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def softmax_backward(C, G):
    """Row by row: the Jacobian of softmax (diag(c) − c cᵀ) applied to the gradient g."""
    out = np.empty_like(G)
    for i in range(C.shape[0]):
        c = C[i]
        J = np.diag(c) - np.outer(c, c)
        out[i] = J @ G[i]
    return out


def cosine(X, Y):
    return np.sum(X * Y) / (np.linalg.norm(X) * np.linalg.norm(Y))


def cosine_grads(X, Y):
    nx, ny, xy = np.linalg.norm(X), np.linalg.norm(Y), np.sum(X * Y)
    return Y / (nx * ny) - xy * X / (nx**3 * ny), X / (nx * ny) - xy * Y / (nx * ny**3)


def entropy(C):
    return -np.sum(C * np.log(C))


def unpack(theta):
    """Memberships from logits: ``theta`` holds Z_atac, Z_rna, Z_regions, Z_genes, S_*, b_*, c_*."""
    return {
        "C_atac": softmax(theta["Z_atac"]),
        "C_rna": softmax(theta["Z_rna"]),
        "C_regions": softmax(theta["Z_regions"]),
        "C_genes": softmax(theta["Z_genes"]),
    }


def loss_terms(R, G, A, theta, w, rna_only, atac_only):
    """Every term of the objective (dense ``R``, ``G``, ``A``); ``w`` holds a1…a6."""
    C = unpack(theta)
    na, pa = R.shape
    nr, pr = G.shape
    Ra = R - C["C_atac"] @ theta["S_atac"] @ C["C_regions"].T - theta["b_atac"][:, None] - theta["c_atac"][None, :]
    Rr = G - C["C_rna"] @ theta["S_rna"] @ C["C_genes"].T - theta["b_rna"][:, None] - theta["c_rna"][None, :]
    t = {
        "recon_atac": w["a1"] * np.sum(Ra**2) / (na * pa),
        "recon_rna": w["a2"] * np.sum(Rr**2) / (nr * pr),
        "cos_S": cosine(theta["S_atac"], theta["S_rna"]),
        "cos_features": cosine(C["C_genes"], A @ C["C_regions"]),
        "mask": np.sum(C["C_rna"][:, atac_only] ** 2) / nr + np.sum(C["C_atac"][:, rna_only] ** 2) / na,
        "entropy": entropy(C["C_rna"]) / nr + entropy(C["C_atac"]) / na,
    }
    t["total"] = (t["recon_atac"] + t["recon_rna"] - w["a3"] * t["cos_S"] - w["a4"] * t["cos_features"]
                  + w["a5"] * t["mask"] + w["a6"] * t["entropy"])
    return t


def gradients(R, G, A, theta, w, rna_only, atac_only):
    """Gradient of the total loss with respect to Z_atac, Z_rna, Z_regions, Z_genes, S_atac, S_rna."""
    C = unpack(theta)
    out = {}
    gCf = {}
    gS_cos = dict(zip(("S_atac", "S_rna"), cosine_grads(theta["S_atac"], theta["S_rna"])))
    for m, X, a, feat, own_mask in (("atac", R, w["a1"], "regions", rna_only), ("rna", G, w["a2"], "genes", atac_only)):
        Cc, S, V = C["C_" + m], theta["S_" + m], C["C_" + feat]
        n, p = X.shape
        M = X - Cc @ S @ V.T - theta["b_" + m][:, None] - theta["c_" + m][None, :]
        dU = -2 * a * M @ V / (n * p)
        dC = dU @ S.T
        dC[:, own_mask] += 2 * w["a5"] * Cc[:, own_mask] / n
        dC += -w["a6"] * (np.log(Cc) + 1) / n
        out["Z_" + m] = softmax_backward(Cc, dC)
        out["S_" + m] = Cc.T @ dU - w["a3"] * gS_cos["S_" + m]
        gCf[feat] = -2 * a * M.T @ (Cc @ S) / (n * p)
    g_genes, g_P = cosine_grads(C["C_genes"], A @ C["C_regions"])
    gCf["genes"] = gCf["genes"] - w["a4"] * g_genes
    gCf["regions"] = gCf["regions"] - w["a4"] * A.T @ g_P
    for feat in ("genes", "regions"):
        out["Z_" + feat] = softmax_backward(C["C_" + feat], gCf[feat])
    return out


# --------------------------------------------------------------------------- mosaics (docs/mosaic.md)


def mosaic_loss_terms(blocks, batches, A, theta, w):
    """Every term of a mosaic's objective, densely. ``blocks``: list of (name, batch, modality, dense X);
    ``batches``: {batch: masked columns}; ``theta``: ``Z_<batch>``, ``Zf_rna``/``Zf_atac``, ``S_<block>``,
    ``b_<block>``, ``c_rna``/``c_atac``."""
    C = {k: softmax(theta["Z_" + k]) for k in batches}
    V = {m: softmax(theta["Zf_" + m]) for m in ("rna", "atac")}
    t = {"recon_atac": 0.0, "recon_rna": 0.0}
    for name, batch, m, X in blocks:
        n, p = X.shape
        M = X - C[batch] @ theta["S_" + name] @ V[m].T - theta["b_" + name][:, None] - theta["c_" + m][None, :]
        t["recon_" + m] += w["a1" if m == "atac" else "a2"] * np.sum(M**2) / (n * p)
    S = [theta["S_" + b[0]] for b in blocks]
    t["cos_S"] = sum(cosine(S[s], S[u]) for s in range(len(S)) for u in range(s + 1, len(S))) / (len(S) - 1)
    t["cos_features"] = cosine(V["rna"], A @ V["atac"])
    t["mask"] = sum(np.sum(C[k][:, cols] ** 2) / C[k].shape[0] for k, cols in batches.items())
    t["entropy"] = sum(entropy(C[k]) / C[k].shape[0] for k in batches)
    t["total"] = (t["recon_atac"] + t["recon_rna"] - w["a3"] * t["cos_S"] - w["a4"] * t["cos_features"]
                  + w["a5"] * t["mask"] + w["a6"] * t["entropy"])
    return t


def mosaic_gradients(blocks, batches, A, theta, w):
    """Gradient of a mosaic's total loss: ``Z_<batch>``, ``Zf_<modality>`` (logits) and ``S_<block>``."""
    C = {k: softmax(theta["Z_" + k]) for k in batches}
    V = {m: softmax(theta["Zf_" + m]) for m in ("rna", "atac")}
    gC = {k: np.zeros_like(C[k]) for k in batches}
    gV = {m: np.zeros_like(V[m]) for m in V}
    out = {}
    B = len(blocks)
    for name, batch, m, X in blocks:
        n, p = X.shape
        a = w["a1" if m == "atac" else "a2"]
        S = theta["S_" + name]
        M = X - C[batch] @ S @ V[m].T - theta["b_" + name][:, None] - theta["c_" + m][None, :]
        dU = -2 * a * M @ V[m] / (n * p)
        gC[batch] += dU @ S.T
        g_cos = sum(cosine_grads(S, theta["S_" + o[0]])[0] for o in blocks if o[0] != name)
        out["S_" + name] = C[batch].T @ dU - w["a3"] / (B - 1) * g_cos
        gV[m] += -2 * a * M.T @ (C[batch] @ S) / (n * p)
    for k, cols in batches.items():
        n = C[k].shape[0]
        gC[k][:, cols] += 2 * w["a5"] * C[k][:, cols] / n
        gC[k] += -w["a6"] * (np.log(C[k]) + 1) / n
        out["Z_" + k] = softmax_backward(C[k], gC[k])
    g_genes, g_P = cosine_grads(V["rna"], A @ V["atac"])
    gV["rna"] = gV["rna"] - w["a4"] * g_genes
    gV["atac"] = gV["atac"] - w["a4"] * A.T @ g_P
    for m in V:
        out["Zf_" + m] = softmax_backward(V[m], gV[m])
    return out
