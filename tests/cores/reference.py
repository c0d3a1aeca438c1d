"""Plain NumPy float64 loops that define what every memory core must compute."""

from __future__ import annotations

import numpy as np


def to64(tree):
    """Flax params -> nested dicts of float64 NumPy arrays."""
    if isinstance(tree, dict) or hasattr(tree, "items"):
        return {k: to64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gelu(x):
    """The tanh approximation flax uses by default."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def layer_norm(x, p, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def dense(x, p):
    return x @ p["kernel"] + p["bias"]


def linear_recurrence(a, b, resets, x0):
    """x[t] = b[t] if resets[t] else a*x[t-1] + b[t]; a [P] or [T, B, P], b [T, B, P]."""
    x = np.array(x0, dtype=np.complex128)
    out = np.zeros(b.shape, np.complex128)
    for t in range(b.shape[0]):
        for i in range(b.shape[1]):
            a_ti = a[t, i] if np.ndim(a) == 3 else a
            x[i] = b[t, i] if resets[t, i] else a_ti * x[i] + b[t, i]
        out[t] = x
    return out


def s5_layer_system(p, cfg):
    re = p["lambda_re"]
    if cfg["clip_eigs"]:
        re = np.minimum(re, -1e-4)
    lam = re + 1j * p["lambda_im"]
    bt = p["B"][..., 0] + 1j * p["B"][..., 1]
    ct = p["C"][..., 0] + 1j * p["C"][..., 1]
    step = np.exp(p["log_step"])
    if cfg["discretization"] == "zoh":
        lam_bar = np.exp(lam * step)
        b_bar = ((lam_bar - 1.0) / lam)[:, None] * bt
    else:
        inv = 1.0 / (1.0 - 0.5 * step * lam)
        lam_bar = inv * (1.0 + 0.5 * step * lam)
        b_bar = (inv * step)[:, None] * bt
    return lam_bar, b_bar, ct


def s5(params, cfg, carry, xs, resets):
    """S5 stack, one time step at a time. carry [B, L, P'] complex; xs [T, B, F]."""
    params = to64(params["params"])
    carry = np.array(carry, np.complex128)
    h_seq = dense(np.asarray(xs, np.float64), params["encoder"])
    out = np.zeros_like(h_seq)
    for t in range(xs.shape[0]):
        h = h_seq[t]
        for i in range(cfg["num_layers"]):
            p = params[f"layers_{i}"]
            lam_bar, b_bar, ct = s5_layer_system(p, cfg)
            u = layer_norm(h, p["norm"]) if cfg["prenorm"] else h
            bu = u @ b_bar.T
            a = lam_bar
            if cfg.get("input_decay"):
                extra = np.logaddexp(0.0, dense(u, p["decay"]))  # softplus
                a = lam_bar * np.minimum(np.abs(lam_bar), 1.0) ** extra  # never amplifies
            x = np.where(resets[t][:, None], bu, a * carry[:, i] + bu)
            carry[:, i] = x
            scale = 2.0 if cfg["conj_sym"] else 1.0
            h = ssm_block(h, scale * np.real(x @ ct.T) + p["D"] * u, p, cfg)
        out[t] = h
    return carry, out


def ssm_block(h, y, p, cfg):
    """What follows an S5 or LRU layer's readout y: GELU, GLU mixing, residual, norm."""
    y = gelu(y)
    value = dense(y, p["mix_value"]) if cfg["mixing"] == "full_glu" else y
    h = h + value * sigmoid(dense(y, p["mix_gate"]))
    return h if cfg["prenorm"] else layer_norm(h, p["norm"])


def lru(params, cfg, carry, xs, resets):
    """LRU stack from the paper's equations, one time step at a time.

    λ = exp(-ν + iθ) with ν = 1e-6 + exp(ν_log) (the floor that keeps |λ| < 1) and
    θ = exp(θ_log); x[t] = λ x[t-1] + γ (B u[t]); y[t] = Re(C x[t]) + D u[t].
    carry [B, L, N] complex; xs [T, B, F].
    """
    params = to64(params["params"])
    carry = np.array(carry, np.complex128)
    h_seq = dense(np.asarray(xs, np.float64), params["encoder"])
    out = np.zeros_like(h_seq)
    for t in range(xs.shape[0]):
        h = h_seq[t]
        for i in range(cfg["num_layers"]):
            p = params[f"layers_{i}"]
            nu = 1e-6 + np.exp(p["nu_log"])
            lam = np.exp(-nu + 1j * np.exp(p["theta_log"]))
            gamma = np.exp(p["gamma_log"])
            c = p["C_re"] + 1j * p["C_im"]
            u = layer_norm(h, p["norm"]) if cfg["prenorm"] else h
            for b in range(xs.shape[1]):
                bu = gamma * ((p["B_re"] + 1j * p["B_im"]) @ u[b])
                carry[b, i] = bu if resets[t, b] else lam * carry[b, i] + bu
            h = ssm_block(h, np.real(carry[:, i] @ c.T) + p["D"] * u, p, cfg)
        out[t] = h
    return carry, out


def gru(params, num_layers, carry, xs, resets):
    """GRU stack with the PyTorch/flax gate convention. carry [B, L, H]."""
    p = to64(params["params"])
    carry = np.array(carry, np.float64)
    out = []
    for t in range(xs.shape[0]):
        h_in = np.asarray(xs[t], np.float64)
        for i in range(num_layers):
            h = np.where(resets[t][:, None], 0.0, carry[:, i])
            gi = h_in @ p[f"layer{i}_wi"] + p[f"layer{i}_b"]
            gh = h @ p[f"layer{i}_wh"]
            ir, iz, in_ = np.split(gi, 3, axis=-1)
            hr, hz, hn = np.split(gh, 3, axis=-1)
            r, z = sigmoid(ir + hr), sigmoid(iz + hz)
            n = np.tanh(in_ + r * (hn + p[f"layer{i}_bhn"]))
            carry[:, i] = (1 - z) * n + z * h
            h_in = carry[:, i].copy()
        out.append(h_in)
    return carry, np.stack(out)


def lstm(params, num_layers, carry, xs, resets):
    """LSTM stack, gates ordered (input, forget, cell, output), forget bias +1."""
    p = to64(params["params"])
    c_all, h_all = np.array(carry.cell, np.float64), np.array(carry.hidden, np.float64)
    out = []
    for t in range(xs.shape[0]):
        h_in = np.asarray(xs[t], np.float64)
        for i in range(num_layers):
            c = np.where(resets[t][:, None], 0.0, c_all[:, i])
            h = np.where(resets[t][:, None], 0.0, h_all[:, i])
            g = h_in @ p[f"layer{i}_wi"] + p[f"layer{i}_b"] + h @ p[f"layer{i}_wh"]
            gi, gf, gu, go = np.split(g, 4, axis=-1)
            c = sigmoid(gf + 1.0) * c + sigmoid(gi) * np.tanh(gu)
            h = sigmoid(go) * np.tanh(c)
            c_all[:, i], h_all[:, i] = c, h
            h_in = h
        out.append(h_in)
    return (c_all, h_all), np.stack(out)


def mlp(params, num_layers, xs):
    p = to64(params["params"])
    h = np.asarray(xs, np.float64)
    for i in range(num_layers):
        h = gelu(dense(h, p[f"Dense_{i}"]))
    return h
