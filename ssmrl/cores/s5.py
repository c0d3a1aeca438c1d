"""S5: stacked simplified structured state-space layers with in-scan episode resets.

Each layer maps ``u [T, B, H] -> y [T, B, H]`` through a diagonal complex linear
recurrence (see `ssmrl.cores.scan`), initialised from block-diagonal HiPPO-N
eigenvalues, discretised with learnable per-state time steps (ZOH or bilinear):

    x[t] = Λ̄ x[t-1] + B̄ u[t]       (x reset to 0 at episode starts)
    y[t] = c · Re(C̃ x[t]) + D ⊙ u[t]    (c = 2 with conjugate symmetry, else 1)

followed by GELU, GLU-style mixing, and a residual connection with LayerNorm
before (prenorm) or after the layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import tyro

from ssmrl.cores.checks import check_choice, check_positive
from ssmrl.cores.hippo import block_diagonal_init
from ssmrl.cores.scan import SCAN_MODES
from ssmrl.cores.ssm import SSMLayer, SSMStack, readout

DISCRETIZATIONS = ("zoh", "bilinear")
MIXINGS = ("half_glu", "full_glu")


@dataclass(frozen=True)
class S5Options:
    """Options of the S5 core (`S5`); `validate` says which combinations are allowed."""

    name: tyro.conf.Suppress[str] = "s5"
    """The core's registered name (the ``core.name`` of YAML files and flags)."""
    features: int = 128
    """Width H of the input encoder, of every layer and of the output."""
    num_layers: int = 2
    """Number L of stacked S5 layers."""
    state_size: int = 128
    """State size P of each layer (P/2 complex states are kept with conj_sym)."""
    blocks: int = 1
    """Number of HiPPO-N blocks of size state_size/blocks that tile the initial eigenvalues."""
    conj_sym: bool = True
    """Keep one eigenvalue of each conjugate pair, halving the state, and double the output."""
    discretization: str = "zoh"
    """Discretisation of the continuous system: zoh or bilinear."""
    dt_min: float = 0.001
    """Smallest initial time step (timescale); steps start log-uniform in [dt_min, dt_max]."""
    dt_max: float = 0.1
    """Largest initial time step (timescale)."""
    clip_eigs: bool = False
    """Clip the eigenvalues' real parts to at most -1e-4, so the recurrence cannot grow."""
    prenorm: bool = True
    """LayerNorm on each layer's input (True) or after its residual sum (False)."""
    mixing: str = "half_glu"
    """Output mixing: half_glu (y * sigmoid(W y)) or full_glu (V y * sigmoid(W y))."""
    scan: str = "auto"
    """Recurrence: associative (parallel), sequential (lax.scan) or auto (by the backend)."""
    input_decay: bool = False
    """Let each input also shrink the state (learned forgetting), e.g. at episode ends in trials."""

    def validate(self) -> None:
        """Raise ValueError (one line, naming the option and what it allows) if invalid."""
        check_choice("discretization", self.discretization, DISCRETIZATIONS)
        check_choice("mixing", self.mixing, MIXINGS)
        check_choice("scan", self.scan, SCAN_MODES)
        check_positive(self, "features", "num_layers", "state_size", "blocks")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if self.state_size % self.blocks or (
            self.conj_sym and (self.state_size // self.blocks) % 2
        ):
            raise ValueError(
                f"blocks={self.blocks} must divide state_size={self.state_size}"
                + (" into even blocks (conj_sym=True)" if self.conj_sym else "")
            )

    @property
    def carry_size(self) -> int:
        """P', the complex states kept per layer: state_size // 2 with conj_sym, else state_size."""
        return self.state_size // 2 if self.conj_sym else self.state_size


def discretize(lam, b_tilde, step, method: str):
    """Discretise the continuous diagonal system.

    | arg     | shape    | meaning                              |
    |---------|----------|--------------------------------------|
    | lam     | [P]      | complex continuous-time eigenvalues  |
    | b_tilde | [P, H]   | complex input matrix in the eigenbasis |
    | step    | [P]      | positive time steps Δ                |
    | return  | [P], [P, H] | Λ̄ and B̄                         |

    ZOH: ``Λ̄ = exp(ΛΔ)``, ``B̄ = (Λ̄ - 1)/Λ · B̃``.
    Bilinear: ``Λ̄ = (1 + ΔΛ/2)/(1 - ΔΛ/2)``, ``B̄ = Δ/(1 - ΔΛ/2) · B̃``.
    """
    if method == "zoh":
        lam_bar = jnp.exp(lam * step)
        return lam_bar, ((lam_bar - 1.0) / lam)[:, None] * b_tilde
    if method == "bilinear":
        inv = 1.0 / (1.0 - 0.5 * step * lam)
        return inv * (1.0 + 0.5 * step * lam), (inv * step)[:, None] * b_tilde
    raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {method!r}")


def _constant(value):
    return lambda key, shape: jnp.asarray(value, jnp.float32).reshape(shape)


class S5Layer(SSMLayer):
    """One S5 layer: norm, SSM, GELU, GLU mixing, residual (`ssmrl.cores.ssm.SSMLayer`).

    Carry: the complex state ``[B, P']`` (``P' = state_size // 2`` with conj_sym).
    Reads every field of ``options`` except ``num_layers``.
    """

    options: S5Options

    def setup(self):
        o = self.options
        lam, v = block_diagonal_init(o.state_size, o.blocks, o.conj_sym)
        p, h = lam.shape[0], o.features

        v_inv = jnp.asarray(v.conj().T, jnp.complex64)
        v = jnp.asarray(v, jnp.complex64)

        def b_init(key, shape):
            # Real B [P, H] with fan-in H, moved into the eigenbasis: B̃ = V⁻¹ B.
            bt = v_inv @ (jax.random.normal(key, (o.state_size, h)) / math.sqrt(h))
            return jnp.stack([bt.real, bt.imag], -1)

        def c_init(key, shape):
            # Complex C [H, P] with variance 1/P per part, then C̃ = C V.
            c = jax.random.normal(key, (h, o.state_size, 2)) / math.sqrt(o.state_size)
            ct = (c[..., 0] + 1j * c[..., 1]) @ v
            return jnp.stack([ct.real, ct.imag], -1)

        def log_step_init(key, shape):
            return jax.random.uniform(
                key, shape, minval=math.log(o.dt_min), maxval=math.log(o.dt_max)
            )

        self.lambda_re = self.param("lambda_re", _constant(lam.real), (p,))
        self.lambda_im = self.param("lambda_im", _constant(lam.imag), (p,))
        self.b = self.param("B", b_init, (p, h, 2))
        self.c = self.param("C", c_init, (h, p, 2))
        self.d = self.param("D", nn.initializers.normal(1.0), (h,))
        self.log_step = self.param("log_step", log_step_init, (p,))
        self._setup_block()
        if o.input_decay:
            # softplus(-4) = 0.018: a fresh layer decays by about one plain step per step.
            self.decay = nn.Dense(p, bias_init=nn.initializers.constant(-4.0))

    def _system(self):
        """Λ̄ [P'], B̄ [P', H] and C̃ [H, P'], all complex."""
        re = self.lambda_re
        if self.options.clip_eigs:
            re = jnp.minimum(re, -1e-4)
        lam = re + 1j * self.lambda_im
        b_tilde = self.b[..., 0] + 1j * self.b[..., 1]
        c_tilde = self.c[..., 0] + 1j * self.c[..., 1]
        lam_bar, b_bar = discretize(
            lam, b_tilde, jnp.exp(self.log_step), self.options.discretization
        )
        return lam_bar, b_bar, c_tilde

    def _readout(self, x, u, c_tilde):
        """``c · Re(C̃ x) + D ⊙ u`` (``c = 2`` with conj_sym, else 1)."""
        scale = 2.0 if self.options.conj_sym else 1.0
        return scale * readout(x, c_tilde) + self.d * u

    def _factor(self, lam_bar, u):
        """Λ̄, or with ``input_decay`` the per-step ``Λ̄ |Λ̄|^softplus(W u + b)``.

        The extra factor shrinks the state's magnitude as if ``softplus(...)`` more
        steps had passed, without turning its phase. It uses ``min(log|Λ̄|, 0)``, so
        it never amplifies: where ``|Λ̄| > 1`` (``Re λ > 0`` without ``clip_eigs``) it is 1.
        """
        if not self.options.input_decay:
            return lam_bar
        extra = nn.softplus(self.decay(u))
        return lam_bar * jnp.exp(extra * jnp.minimum(jnp.log(jnp.abs(lam_bar)), 0.0))


class S5(SSMStack):
    """S5 memory core: a Dense encoder to ``features`` then ``num_layers`` S5 layers.

    | call          | inputs                                        | outputs                      |
    |---------------|-----------------------------------------------|------------------------------|
    | ``__call__``  | carry [B, L, P'], xs [T, B, F], resets [T, B] | carry, ys [T, B, features]   |
    | ``step``      | carry [B, L, P'], x [B, F], reset [B]         | carry, y [B, features]       |
    | ``carries``   | carry [B, L, P'], xs [T, B, F], resets [T, B] | carries [T, B, L, P'], ys    |

    ``carries[t]`` is the carry after ``xs[t]``; ``__call__`` returns ``carries[-1]``.
    ``P' = state_size // 2`` with ``conj_sym`` (the default), else ``state_size``.
    The options are the fields of `S5Options`.
    ``input_decay``: each step's input may also shrink the state (``Λ̄`` becomes
    ``Λ̄ |Λ̄|^softplus(W u + b)`` per state), so the memory can learn to forget, e.g. at
    episode ends inside a meta-RL trial, where the reset flag does not fire. Off by default
    (plain S5); the scan stays associative.
    """

    options: S5Options = S5Options()
    layer = S5Layer
