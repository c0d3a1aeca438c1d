"""HiPPO-N initialisation of the S5 state matrix (NumPy float64, run once at init)."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def hippo_n(n: int) -> np.ndarray:
    """The normal part of the HiPPO-LegS matrix, ``A_N = A + p p^T``, shape [n, n].

    With ``s_k = sqrt(k + 1/2)``: ``A_N = -I/2 + S`` where ``S`` is skew-symmetric,
    ``S[j, k] = -s_j s_k`` below the diagonal and ``+s_j s_k`` above it.
    """
    s = np.sqrt(np.arange(n) + 0.5)
    outer = s[:, None] * s[None, :]
    return -0.5 * np.eye(n) + np.tril(-outer, -1) + np.triu(outer, 1)


def hippo_n_eig(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition ``A_N = V diag(lam) V^H`` with unitary V.

    The skew-symmetric part ``S`` equals ``i * H`` for the Hermitian ``H = -i S``, so its
    eigenvalues come from ``eigh`` and every eigenvalue has real part exactly -1/2.
    Returned sorted by imaginary part, ascending: ``lam[k]`` and ``lam[n-1-k]`` are
    conjugates.
    """
    skew = hippo_n(n) + 0.5 * np.eye(n)
    w, v = np.linalg.eigh(-1j * skew)
    return -0.5 + 1j * w, v


def block_diagonal_init(
    state_size: int, blocks: int, conj_sym: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors for ``blocks`` HiPPO-N blocks of size state_size/blocks.

    | return | shape                       |
    |--------|-----------------------------|
    | lam    | [P']                        |
    | v      | [state_size, P']            |

    ``P' = state_size // 2`` with conjugate symmetry (one eigenvalue of each conjugate
    pair kept, the one with negative imaginary part), else ``state_size``.
    """
    if blocks < 1 or state_size % blocks:
        raise ValueError(f"blocks={blocks} must divide state_size={state_size}")
    size = state_size // blocks
    if conj_sym and size % 2:
        raise ValueError(
            f"conj_sym needs an even block size; state_size/blocks = {state_size}/{blocks} = {size}"
        )
    lam, v = hippo_n_eig(size)
    if conj_sym:
        lam, v = lam[: size // 2], v[:, : size // 2]
    return np.tile(lam, blocks), scipy.linalg.block_diag(*([v] * blocks))
