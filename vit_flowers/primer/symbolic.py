"""Self-attention with SymPy symbols (seed note 002): what each output is made of.

Every pixel value is a symbol ``x_c_w_h`` (channel c, position w, h). The
image (C, W, H) is flattened to X (C, N) with pixel (w, h) at n = w * H + h,
as the note's reshape does. Then S = X^T X, A = softmax(S) over each row, and
o = X A^T, all as SymPy expressions.

The note could not do the softmax: NumPy's ``max`` fails on an object array of
symbols. Here the softmax is written directly with ``sympy.exp`` over a SymPy
Matrix (no max is subtracted: that only matters for floating point, and the
result is the same function). Substituting numbers into the expressions gives
the NumPy version's numbers (``self_attention.note_self_attention``).

The note's own last step (o = X S, no softmax) is kept as ``note_output`` so
its printed expression can be reproduced.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import sympy as sp


def symbol_image(c: int = 2, w: int = 2, h: int = 2) -> np.ndarray:
    """A (C, W, H) NumPy object array of SymPy symbols x_c_w_h, as in the note."""
    arr = np.empty((c, w, h), dtype=object)
    for ci in range(c):
        for wi in range(w):
            for hi in range(h):
                arr[ci, wi, hi] = sp.Symbol(f"x_{ci}_{wi}_{hi}")
    return arr


def tokens(c: int = 2, w: int = 2, h: int = 2) -> sp.Matrix:
    """X as a SymPy Matrix (C, N): row c holds channel c of every pixel, n = w * H + h."""
    return sp.Matrix(symbol_image(c, w, h).reshape(c, w * h).tolist())


def gram(x: sp.Matrix) -> sp.Matrix:
    """S = X^T X (N, N): S[i, j] = sum over channels of pixel i times pixel j."""
    return x.T * x


def softmax_rows(s: sp.Matrix) -> sp.Matrix:
    """Row-wise softmax with sympy.exp: A[i, j] = exp(S[i, j]) / sum_k exp(S[i, k])."""
    rows = []
    for i in range(s.rows):
        e = [sp.exp(s[i, j]) for j in range(s.cols)]
        total = sp.Add(*e)
        rows.append([ej / total for ej in e])
    return sp.Matrix(rows)


def self_attention(x: sp.Matrix) -> tuple[sp.Matrix, sp.Matrix, sp.Matrix]:
    """(S, A, o) with S = X^T X, A = softmax(S) per row, o = X A^T (C, N)."""
    s = gram(x)
    a = softmax_rows(s)
    return s, a, x * a.T


def note_output(x: sp.Matrix) -> sp.Matrix:
    """The note's o without a softmax: X (S^T)^T = X S (C, N)."""
    return x * gram(x)


def substitute(expr: sp.Matrix, values: np.ndarray) -> np.ndarray:
    """Evaluate a Matrix of expressions in x_c_w_h at values (C, W, H); float64 array."""
    values = np.asarray(values, dtype=np.float64)
    syms = list(symbol_image(*values.shape).ravel())
    f = sp.lambdify(syms, expr, modules="numpy")
    return np.asarray(f(*values.ravel()), dtype=np.float64)


def note_arrays(c: int = 2, w: int = 2, h: int = 2) -> dict[str, np.ndarray]:
    """The note's NumPy object arrays: image, X (1, C, N), X_T, S (1, N, N), A, o, o_note."""
    image = symbol_image(c, w, h)
    x = np.expand_dims(image, 0).reshape(1, c, w * h)
    x_t = np.transpose(x, (0, 2, 1))
    s = np.matmul(x_t, x)
    xm = sp.Matrix(x[0].tolist())
    _, a, o = self_attention(xm)
    return {
        "image": image,
        "X": x,
        "X_T": x_t,
        "S": s,
        "A": np.array(a.tolist(), dtype=object)[None],
        "o": np.array(o.tolist(), dtype=object)[None],
        "o_note": np.matmul(x, np.transpose(np.transpose(s, (0, 2, 1)), (0, 2, 1))),
    }


def format_like_note(arr: np.ndarray) -> str:
    """Print an object array as the note does (wide lines, each element followed by a comma)."""
    with np.printoptions(linewidth=1000, formatter={"all": lambda v: f"{v},     "}):
        return str(arr)


def report_lines(c: int = 2, w: int = 2, h: int = 2, full: bool = False) -> Iterator[str]:
    """The note's printout step by step, then the symbolic softmax and o = X A^T.

    A and o are long; unless ``full``, only their first element is printed.
    """
    arrs = note_arrays(c, w, h)
    yield "Image Array:"
    yield format_like_note(arrs["image"])
    yield f"X as (B, C, N) {arrs['X'].shape}"
    yield format_like_note(arrs["X"])
    yield f"X_T {arrs['X_T'].shape}"
    yield format_like_note(arrs["X_T"])
    yield f"S = X_T X {arrs['S'].shape}"
    yield format_like_note(arrs["S"])
    yield f"the note's o = X S (no softmax) {arrs['o_note'].shape}"
    yield format_like_note(arrs["o_note"])
    if full:
        yield f"A = softmax(S) over the last axis {arrs['A'].shape}"
        yield format_like_note(arrs["A"])
        yield f"o = X A^T {arrs['o'].shape}"
        yield format_like_note(arrs["o"])
    else:
        yield f"A = softmax(S) over the last axis {arrs['A'].shape}; A[0][0][0] ="
        yield str(arrs["A"][0, 0, 0])
        yield f"o = X A^T {arrs['o'].shape}; o[0][0][0] ="
        yield str(arrs["o"][0, 0, 0])
