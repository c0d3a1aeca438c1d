"""LRU: stacked Linear Recurrent Units (Orvieto et al. 2023) with in-scan episode resets.

Each layer maps ``u [T, B, H] -> y [T, B, H]`` through a diagonal complex linear
recurrence (see `ssmrl.cores.scan`) in the paper's exponential parameterisation:

    λ    = exp(-ν + iθ),   ν = ν_min + exp(ν_log),   θ = exp(θ_log)
    x[t] = λ ⊙ x[t-1] + γ ⊙ (B u[t])      (x reset to 0 at episode starts)
    y[t] = Re(C x[t]) + D ⊙ u[t]

followed by GELU, GLU-style mixing, and a residual connection with LayerNorm before
(prenorm) or after the layer: the block S5 uses (`ssmrl.cores.ssm.SSMLayer`).

| symbol | param                | shape  | init                                               |
|--------|----------------------|--------|----------------------------------------------------|
| ν_log  | ``nu_log``           | [N]    | ``|λ|²`` uniform in ``[r_min², r_max²]`` (the ring) |
| θ_log  | ``theta_log``        | [N]    | ``θ`` uniform in ``(0, max_phase]``                |
| γ      | ``gamma_log`` (log)  | [N]    | ``sqrt(1 - |λ|²)``, then learned                   |
| B      | ``B_re``, ``B_im``   | [N, H] | normal, variance ``1/(2H)`` per part               |
| C      | ``C_re``, ``C_im``   | [H, N] | normal, variance ``1/N`` per part                  |
| D      | ``D``                | [H]    | standard normal                                    |

``|λ| = exp(-ν) <= exp(-ν_min) < 1`` for every ``ν_log``, so a layer is stable by
construction. ``ν_min = 1e-6`` (`NU_MIN`, not in the paper) keeps that true in float32,
where ``exp(-exp(ν_log))`` would round to 1 for ``ν_log < -17``; it caps memory at about
a million steps and moves the paper's ``|λ|`` by at most one part in a million.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import tyro

from ssmrl.cores.checks import check_choice, check_positive
from ssmrl.cores.s5 import MIXINGS
from ssmrl.cores.scan import SCAN_MODES
from ssmrl.cores.ssm import SSMLayer, SSMStack, readout

NU_MIN = 1e-6
"""Floor of ``ν = -log|λ|``: ``|λ| <= exp(-1e-6) < 1`` even in float32."""

_TINY = float(jnp.finfo(jnp.float32).tiny)


@dataclass(frozen=True)
class LRUOptions:
    """Options of the LRU core (`LRU`); `validate` says which values are allowed.

    The initial ring and phases default to the public LRU code's ``r_min=0, r_max=1,
    max_phase=2π``: every timescale, from one step to the whole episode. With PPO on
    POPGym's RepeatPreviousEasy (`configs/ppo_cpu.yaml`, 1M steps, 3 seeds) these gave
    an MMER of 0.992, and the paper's long-range ring (``0.9, 0.999, π/10``, memories of
    10 to 1000 steps) 0.263: that task needs the last few steps, which a ring of slow
    states holds poorly. The long-range ring stays a setting for long-horizon tasks.
    """

    name: tyro.conf.Suppress[str] = "lru"
    """The core's registered name (the ``core.name`` of YAML files and flags)."""
    features: int = 128
    """Width H of the input encoder, of every layer and of the output."""
    num_layers: int = 2
    """Number L of stacked LRU layers."""
    state_size: int = 64
    """Complex states N of each layer (the carry's P'; S5's default 128 with conj_sym keeps 64)."""
    r_min: float = 0.0
    """Smallest initial |λ|: |λ|² starts uniform in [r_min², r_max²] (uniform on the ring)."""
    r_max: float = 1.0
    """Largest initial |λ| (a state's memory is about 1/(1 - |λ|) steps)."""
    max_phase: float = 2 * math.pi
    """Largest initial phase of λ in radians: phases start uniform in (0, max_phase]."""
    prenorm: bool = True
    """LayerNorm on each layer's input (True) or after its residual sum (False)."""
    mixing: str = "half_glu"
    """Output mixing: half_glu (y * sigmoid(W y)) or full_glu (V y * sigmoid(W y))."""
    scan: str = "auto"
    """Recurrence: associative (parallel), sequential (lax.scan) or auto (by the backend)."""

    def validate(self) -> None:
        """Raise ValueError (one line, naming the option and what it allows) if invalid."""
        check_choice("mixing", self.mixing, MIXINGS)
        check_choice("scan", self.scan, SCAN_MODES)
        check_positive(self, "features", "num_layers", "state_size")
        if not 0 <= self.r_min <= self.r_max <= 1:
            raise ValueError(
                f"need 0 <= r_min <= r_max <= 1, got r_min={self.r_min}, r_max={self.r_max}"
            )
        if not 0 < self.max_phase <= 2 * math.pi:
            raise ValueError(f"max_phase must lie in (0, 2π], got {self.max_phase}")

    @property
    def carry_size(self) -> int:
        """P', the complex states kept per layer: state_size."""
        return self.state_size


def eigenvalues(nu_log: jax.Array, theta_log: jax.Array) -> jax.Array:
    """``λ = exp(-(NU_MIN + exp(ν_log)) + i exp(θ_log))``, so ``|λ| < 1`` always.

    | arg       | shape | dtype   |
    |-----------|-------|---------|
    | nu_log    | [N]   | float   |
    | theta_log | [N]   | float   |
    | return    | [N]   | complex |
    """
    nu = NU_MIN + jnp.exp(nu_log)
    return jnp.exp(jax.lax.complex(-nu, jnp.exp(theta_log)))


def ring_init(r_min: float, r_max: float):
    """Initialiser of ``ν_log`` [N]: ``|λ|²`` uniform in ``[r_min², r_max²]``.

    That is ``|λ|`` uniform over the ring's area, as in the paper. Clipped so that
    ``ν_log`` stays finite at ``r_min = 0`` and ``r_max = 1``.
    """

    def init(key, shape, dtype=jnp.float32):
        r2 = jax.random.uniform(key, shape, dtype) * (r_max**2 - r_min**2) + r_min**2
        nu = -0.5 * jnp.log(jnp.maximum(r2, _TINY))
        return jnp.log(jnp.maximum(nu - NU_MIN, _TINY))

    return init


def phase_init(max_phase: float):
    """Initialiser of ``θ_log`` [N]: ``θ`` uniform in ``(0, max_phase]`` (never 0, so the log
    stays finite)."""

    def init(key, shape, dtype=jnp.float32):
        return jnp.log(max_phase * (1.0 - jax.random.uniform(key, shape, dtype)))

    return init


def gamma_log_init(key: jax.Array, nu_log: jax.Array) -> jax.Array:
    """``log γ = log sqrt(1 - |λ|²)`` [N] for the initial ``ν_log`` [N] (``key`` unused).

    ``1 - |λ|² = -expm1(-2ν)`` keeps precision for ``|λ|`` close to 1.
    """
    del key
    return 0.5 * jnp.log(-jnp.expm1(-2.0 * (NU_MIN + jnp.exp(nu_log))))


class LRULayer(SSMLayer):
    """One LRU layer: norm, LRU, GELU, GLU mixing, residual (`ssmrl.cores.ssm.SSMLayer`).

    Carry: the complex state ``[B, N]``. Reads every field of ``options`` except
    ``num_layers``.
    """

    options: LRUOptions

    def setup(self):
        o = self.options
        n, h = o.state_size, o.features
        self.nu_log = self.param("nu_log", ring_init(o.r_min, o.r_max), (n,))
        self.theta_log = self.param("theta_log", phase_init(o.max_phase), (n,))
        self.gamma_log = self.param("gamma_log", gamma_log_init, self.nu_log)
        b_init = nn.initializers.normal(1.0 / math.sqrt(2 * h))
        c_init = nn.initializers.normal(1.0 / math.sqrt(n))
        self.b_re = self.param("B_re", b_init, (n, h))
        self.b_im = self.param("B_im", b_init, (n, h))
        self.c_re = self.param("C_re", c_init, (h, n))
        self.c_im = self.param("C_im", c_init, (h, n))
        self.d = self.param("D", nn.initializers.normal(1.0), (h,))
        self._setup_block()

    def _system(self):
        """λ [N], γ ⊙ B [N, H] and C [H, N], all complex."""
        gamma = jnp.exp(self.gamma_log)[:, None]
        b = jax.lax.complex(gamma * self.b_re, gamma * self.b_im)
        return eigenvalues(self.nu_log, self.theta_log), b, jax.lax.complex(self.c_re, self.c_im)

    def _readout(self, x, u, c):
        """``Re(C x) + D ⊙ u``."""
        return readout(x, c) + self.d * u


class LRU(SSMStack):
    """LRU memory core: a Dense encoder to ``features`` then ``num_layers`` LRU layers.

    | call          | inputs                                       | outputs                     |
    |---------------|----------------------------------------------|-----------------------------|
    | ``__call__``  | carry [B, L, N], xs [T, B, F], resets [T, B] | carry, ys [T, B, features]  |
    | ``step``      | carry [B, L, N], x [B, F], reset [B]         | carry, y [B, features]      |
    | ``carries``   | carry [B, L, N], xs [T, B, F], resets [T, B] | carries [T, B, L, N], ys    |

    ``carries[t]`` is the carry after ``xs[t]``; ``__call__`` returns ``carries[-1]``.
    ``N = state_size`` complex states per layer (complex64). The options are the fields of
    `LRUOptions`.
    """

    options: LRUOptions = LRUOptions()
    layer = LRULayer
