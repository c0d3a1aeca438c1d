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


def ssm_stack(params, cfg, carry, xs, resets, layer):
    """An S5 or LRU stack, one time step at a time: encoder, then per layer its norm,
    recurrence and `ssm_block`. ``layer(p, u, x, reset) -> (x, y)`` is one layer's
    recurrence and readout for the batch (``x`` its state [B, N], ``reset`` [B]).
    carry [B, L, N] complex; xs [T, B, F]."""
    params = to64(params["params"])
    carry = np.array(carry, np.complex128)
    h_seq = dense(np.asarray(xs, np.float64), params["encoder"])
    out = np.zeros_like(h_seq)
    for t in range(xs.shape[0]):
        h = h_seq[t]
        for i in range(cfg["num_layers"]):
            p = params[f"layers_{i}"]
            u = layer_norm(h, p["norm"]) if cfg["prenorm"] else h
            carry[:, i], y = layer(p, u, carry[:, i], resets[t])
            h = ssm_block(h, y, p, cfg)
        out[t] = h
    return carry, out


def s5(params, cfg, carry, xs, resets):
    """S5 stack. carry [B, L, P'] complex; xs [T, B, F]."""

    def layer(p, u, x, reset):
        lam_bar, b_bar, ct = s5_layer_system(p, cfg)
        bu = u @ b_bar.T
        a = lam_bar
        if cfg.get("input_decay"):
            extra = np.logaddexp(0.0, dense(u, p["decay"]))  # softplus
            a = lam_bar * np.minimum(np.abs(lam_bar), 1.0) ** extra  # never amplifies
        x = np.where(reset[:, None], bu, a * x + bu)
        scale = 2.0 if cfg["conj_sym"] else 1.0
        return x, scale * np.real(x @ ct.T) + p["D"] * u

    return ssm_stack(params, cfg, carry, xs, resets, layer)


def ssm_block(h, y, p, cfg):
    """What follows an S5 or LRU layer's readout y: GELU, GLU mixing, residual, norm."""
    y = gelu(y)
    value = dense(y, p["mix_value"]) if cfg["mixing"] == "full_glu" else y
    h = h + value * sigmoid(dense(y, p["mix_gate"]))
    return h if cfg["prenorm"] else layer_norm(h, p["norm"])


def lru(params, cfg, carry, xs, resets):
    """LRU stack from the paper's equations.

    λ = exp(-ν + iθ) with ν = 1e-6 + exp(ν_log) (the floor that keeps |λ| < 1) and
    θ = exp(θ_log); x[t] = λ x[t-1] + γ (B u[t]); y[t] = Re(C x[t]) + D u[t].
    carry [B, L, N] complex; xs [T, B, F].
    """

    def layer(p, u, x, reset):
        nu = 1e-6 + np.exp(p["nu_log"])
        lam = np.exp(-nu + 1j * np.exp(p["theta_log"]))
        gamma = np.exp(p["gamma_log"])
        c = p["C_re"] + 1j * p["C_im"]
        x = x.copy()
        for b in range(u.shape[0]):
            bu = gamma * ((p["B_re"] + 1j * p["B_im"]) @ u[b])
            x[b] = bu if reset[b] else lam * x[b] + bu
        return x, np.real(x @ c.T) + p["D"] * u

    return ssm_stack(params, cfg, carry, xs, resets, layer)


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


def rotary(x, position, base):
    """Turn each pair ``(x_i, x_{i+D/2})`` of ``x [..., D]`` by ``position * base^(-2i/D)``."""
    half = x.shape[-1] // 2
    angle = position * base ** (-np.arange(half) / half)
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate(
        [x1 * np.cos(angle) - x2 * np.sin(angle), x2 * np.cos(angle) + x1 * np.sin(angle)], -1
    )


def transformer(params, cfg, carry, xs, resets):
    """Transformer stack from its equations, one step and one batch row at a time.

    Each row keeps, per layer, an explicit history of its last W steps as entries
    ``(position, key, value, valid)``: the carry's W slots at positions -W..-1, then step
    ``t`` at position ``t`` (absolute, unlike the module's local frames). A reset replaces
    the history by W zero, invalid entries (the initial carry). Step ``t`` attends, per
    head, to the valid entries among the history and itself, with scores
    ``rotary(q, t) · rotary(k, s) / √D``; pre-norm blocks, GELU MLP, final LayerNorm.

    carry (keys, values, valid): [B, L, W, N, D], [B, L, W, N, D], [B, W]; xs [T, B, F].
    Returns the carry after the last step, the same way, and ys [T, B, features].
    """
    p = to64(params["params"])
    layers, heads, size, window = (
        cfg[k] for k in ("num_layers", "num_heads", "head_size", "window")
    )
    base = cfg["rotary_base"]
    keys, values = np.asarray(carry[0], np.float64), np.asarray(carry[1], np.float64)
    valid = np.asarray(carry[2], bool)
    t_len, batch = xs.shape[:2]
    zero = np.zeros((heads, size))
    history = [
        [
            [(s - window, keys[b, i, s], values[b, i, s], valid[b, s]) for s in range(window)]
            for i in range(layers)
        ]
        for b in range(batch)
    ]
    out = np.zeros((t_len, batch, cfg["features"]))
    for t in range(t_len):
        for b in range(batch):
            if resets[t, b]:
                history[b] = [[(0, zero, zero, False)] * window for _ in range(layers)]
            h = dense(np.asarray(xs[t, b], np.float64), p["encoder"])
            for i in range(layers):
                lp = p[f"layers_{i}"]
                q, k, v = dense(layer_norm(h, lp["attention_norm"]), lp["qkv"]).reshape(
                    3, heads, size
                )
                entries = history[b][i] + [(t, k, v, True)]
                history[b][i] = entries[1:]
                seen = [(s, k_s, v_s) for s, k_s, v_s, ok in entries if ok]
                a = np.zeros((heads, size))
                for n in range(heads):
                    query = rotary(q[n], t, base)
                    scores = np.array([query @ rotary(k_s[n], s, base) for s, k_s, _ in seen])
                    w = np.exp(scores / np.sqrt(size) - np.max(scores / np.sqrt(size)))
                    a[n] = (w / w.sum()) @ np.array([v_s[n] for _, _, v_s in seen])
                h = h + dense(a.reshape(-1), lp["out"])
                mlp = gelu(dense(layer_norm(h, lp["mlp_norm"]), lp["mlp_hidden"]))
                h = h + dense(mlp, lp["mlp_out"])
            out[t, b] = layer_norm(h, p["norm"])
    new_keys = np.array([[[e[1] for e in hist] for hist in row] for row in history])
    new_values = np.array([[[e[2] for e in hist] for hist in row] for row in history])
    new_valid = np.array([[e[3] for e in row[0]] for row in history])
    return (new_keys, new_values, new_valid), out
