r"""Starts of inpainting: fills of the missing pixels that the low-rank refinement
begins from.

- :func:`biharmonic_fill`: the minimiser of :math:`\sum_c \|\Delta X_c\|_2^2` over the
  missing pixels (smooth interpolation; right for thin holes: drops, text, scribbles).
- :func:`low_rank_fills`: global rank-``r`` completions (each channel one matrix),
  right for wide holes in structured images (a facade's block).
- :func:`choose_start`: picks between them by a held-out test.
- :func:`start_by_region`: either, per cluster of holes on its own box, so the cost
  follows the missing pixels rather than the image.

Pure torch. Images ``(C, H, W)``, masks bool ``(H, W)`` (True = missing).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lrrtool.workers import run_all

#: :func:`biharmonic_fill`'s stopping rule: each channel's residual norm below this times
#: its right-hand side's. Measured on the 12 MP scale photo's thick scribbles (the start
#: alone, 12 pieces, 2 workers): 1e-6 13.4 s, 26.709 dB on the missing pixels; 1e-5 12.5 s,
#: 26.712 dB (scikit-image's direct solve: 26.71); 1e-4 9.1 s, 26.743 dB. But a wide smooth
#: hole needs the steps: a 96 px square in a 160 px sine pattern (``tests/test_tasks.py``)
#: is filled at 34.15 dB converged, 33.40 at 1e-6, 33.24 at 1e-5 and 31.64 at 1e-4.
BIHARMONIC_TOL = 1e-5
#: Ranks that :func:`choose_start` tries, and the pixels-from-known radius of a "wide" hole.
START_RANKS = (1, 2, 3, 5, 8, 12)
WIDE_HOLE_RADIUS = 4
#: The held-out test runs only when at least this fraction of the missing pixels lies in
#: wide holes. Measured: thick scribbles (bench/inpaint.py --photos) have 0.8-3.7 %, and
#: the test kept biharmonic on all five (gains -0.6 to -8 dB) at 9 s per 512x512 image;
#: the TNNR square masks have 51 % and 88 %, text 0 %.
WIDE_FRACTION = 0.1


def push_pull_fill(image: Tensor, fill: Tensor) -> Tensor:
    """Fast initial fill: mask-aware averages over a pyramid, finest known level wins.

    ``image`` ``(C, H, W)``, ``fill`` bool ``(H, W)``; returns ``(C, H, W)`` with observed
    pixels unchanged. Every missing pixel gets a value as long as one pixel is observed.
    """
    known = (~fill).to(image.dtype)[None, None]
    values = (image * known[0])[None]
    levels = [(values, known)]
    while min(levels[-1][1].shape[-2:]) > 1 and bool((levels[-1][1] == 0).any()):
        v, k = levels[-1]
        levels.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(k, 2, ceil_mode=True)))
    v, k = levels[-1]
    estimate = v / k.clamp_min(1e-12)
    for v, k in reversed(levels[:-1]):
        up = F.interpolate(estimate, size=v.shape[-2:], mode="bilinear", align_corners=False)
        estimate = torch.where(k > 0, v / k.clamp_min(1e-12), up)
    return torch.where(fill, estimate[0], image)


def laplacian_energy(x: Tensor) -> Tensor:
    r""":math:`\sum \|\Delta x\|^2` over all pixels of ``(C, H, W)`` (replicate borders)."""
    return _laplacian(x).square().sum()


def _laplacian(x: Tensor) -> Tensor:
    padded = F.pad(x.unsqueeze(0), (1, 1, 1, 1), mode="replicate")[0]
    return padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:] - 4 * x


def biharmonic_fill(image: Tensor, fill: Tensor, *, iters: int = 500, tol: float = BIHARMONIC_TOL) -> Tensor:
    r"""Biharmonic inpainting: :math:`\arg\min \sum_c \|\Delta X_c\|_2^2` over the pixels
    where ``fill`` is True, the others fixed to ``image`` (:func:`smooth_fill` of order 2).
    Converged, it is the minimiser of ``skimage.restoration.inpaint_biharmonic`` up to its
    boundary handling."""
    return smooth_fill(image, fill, order=2, iters=iters, tol=tol)


def harmonic_fill(image: Tensor, fill: Tensor, *, iters: int = 500, tol: float = BIHARMONIC_TOL) -> Tensor:
    r"""Harmonic (membrane) inpainting: :math:`\arg\min \sum_c \|\nabla X_c\|_2^2` over the
    pixels where ``fill`` is True, the others fixed to ``image`` (:func:`smooth_fill` of
    order 1): each missing pixel the mean of its four neighbours, so the fill stays within
    the values around the hole, where the biharmonic fill carries the boundary's slopes
    inward and overshoots on texture. Measured on three 20-frame clips with a caption box
    and a logo (the start alone, per frame, missing-pixel PSNR): vtest 24.22 dB against
    biharmonic 22.92 and OpenCV Telea 24.09; vtest-pan 21.01 / 19.96 / 20.45; tree 21.13 /
    19.86 / 20.67."""
    return smooth_fill(image, fill, order=1, iters=iters, tol=tol)


def smooth_fill(image: Tensor, fill: Tensor, *, order: int, iters: int = 500, tol: float = BIHARMONIC_TOL) -> Tensor:
    r"""The smoothest fill of the pixels where ``fill`` is True, the others fixed to
    ``image``: :math:`\arg\min \sum_c \langle X_c, A X_c\rangle` with :math:`A = -\Delta`
    (``order`` 1, harmonic) or :math:`\Delta^\top\Delta` (``order`` 2, biharmonic), the
    5-point Laplacian with replicate borders.

    The normal equations :math:`P^\top A P\,x = -P^\top A\,y` are solved by conjugate
    gradients on the free pixels (:func:`_conjugate_gradients`), each channel for at most
    ``iters`` steps or until its residual norm falls below ``tol`` times its right-hand
    side's (:data:`BIHARMONIC_TOL`). The condition number grows like the ``2 order``-th
    power of the hole's width, so CG alone stalls on big holes. The start is therefore the
    same problem solved at half resolution (recursively; a coarse pixel is known when any
    of its four children is), upsampled: cascadic multigrid. On the coarsest level the
    start is :func:`push_pull_fill`. Biharmonic holes up to about 30 px converge. Wider ones do not
    converge in 500 steps, and the result then depends on the start. The cascade brought
    the 134 px TNNR ``square`` from 15.92 to 17.01 dB over 9 images, but it lost on the
    bundled facade (``bench/inpaint.py``). ``image`` ``(C, H, W)``, ``fill`` bool
    ``(H, W)``; returns ``(C, H, W)``.
    """
    window = _hole_window(fill, margin=order)
    if window is None:
        return image.clone()
    x = push_pull_fill(image, fill)
    if min(fill.shape) >= 32:
        known = (~fill).to(image.dtype)[None]
        coarse_known = F.avg_pool2d(known, 2, ceil_mode=True)
        coarse = F.avg_pool2d(image * known, 2, ceil_mode=True) / coarse_known.clamp_min(1e-12)
        coarse_fill = coarse_known[0] == 0
        if bool(coarse_fill.any()):
            coarse = smooth_fill(coarse.masked_fill(coarse_fill, 0), coarse_fill, order=order, iters=iters, tol=tol)
            up = F.interpolate(coarse[None], size=fill.shape, mode="bilinear", align_corners=False)[0]
            x = torch.where(fill, up, image)

    x, free = x[(slice(None), *window)], fill[window]  # x holds the observed pixels as they are
    out = image.clone()
    out[(slice(None), *window)][:, free] = _conjugate_gradients(x, free, order=order, iters=iters, tol=tol)
    return out


#: The smooth fills by name (the ``start`` of a thin hole).
SMOOTH_FILLS: dict[str, Callable[..., Tensor]] = {"biharmonic": biharmonic_fill, "harmonic": harmonic_fill}


def _smoothness(x: Tensor, order: int) -> Tensor:
    r""":math:`A x` for ``x`` ``(C, H, W)``: :math:`-\Delta x` (``order`` 1) or
    :math:`\Delta^\top \Delta x` (``order`` 2)."""
    return -_laplacian(x) if order == 1 else _laplacian_adjoint(_laplacian(x))


def _conjugate_gradients(x: Tensor, free: Tensor, *, order: int, iters: int, tol: float) -> Tensor:
    r"""The free pixels' values ``(C, n)`` that solve the normal equations of
    :func:`smooth_fill`, :math:`P^\top A P u = b` over the ``n`` pixels of
    ``free`` ``(h, w)`` (row-major), :math:`b = -P^\top A\,x_{\text{known}}`,
    from the start ``x`` ``(C, h, w)``: conjugate gradients, one per channel, on ``A`` as a
    sparse matrix (:func:`_normal_matrix`), so a step costs the free pixels, not the box
    (scribbles across a photo leave 90 % or more of their box known). Each channel stops
    when its residual's norm is below ``tol`` times its right-hand side's."""
    known = x * (~free).to(x.dtype)
    b = -_smoothness(known, order)[:, free].T  # (n, C)
    u = x[:, free].T.contiguous()
    matrix = _normal_matrix(free, x.dtype, order)
    residual = b - matrix @ u
    direction = residual.clone()
    rs = residual.square().sum(0)
    stop = tol**2 * b.square().sum(0)
    tiny = torch.finfo(x.dtype).tiny
    for _ in range(iters):
        active = rs > stop
        if not bool(active.any()):
            break
        applied = matrix @ direction
        step = torch.where(active, rs / (direction * applied).sum(0).clamp_min(tiny), 0)
        u = u + step * direction
        residual = residual - step * applied
        rs_next = residual.square().sum(0)
        direction = residual + torch.where(active, rs_next / rs.clamp_min(tiny), 0) * direction
        rs = rs_next
    return u.T


def _normal_matrix(free: Tensor, dtype: torch.dtype, order: int = 2) -> Tensor:
    r""":math:`P^\top A P` over the pixels of ``free`` ``(h, w)``, row-major, as a sparse CSR
    ``(n, n)`` matrix, ``A`` the operator of :func:`_smoothness` (replicate borders
    included) applied to 25 probes, each one on every fifth row and column. The operator
    reaches at most 2 px, so a probe's pixels never share an output, and each output is
    the coefficient of the one probe pixel within 2 px."""
    (h, w), n, device = free.shape, int(free.sum()), free.device
    number = torch.full((h, w), -1, dtype=torch.long, device=device)
    number[free] = torch.arange(n, device=device)
    r, c = torch.arange(h, device=device)[:, None], torch.arange(w, device=device)[None, :]
    rows, cols, values = [], [], []
    for a in range(5):
        for b in range(5):
            probe = free & (r % 5 == a) & (c % 5 == b)
            applied = _smoothness(probe[None].to(dtype), order)[0]
            source_r, source_c = r - (r - a + 2) % 5 + 2, c - (c - b + 2) % 5 + 2  # the probe pixel near
            inside = (source_r >= 0) & (source_r < h) & (source_c >= 0) & (source_c < w)
            source = number[source_r.clamp(0, h - 1), source_c.clamp(0, w - 1)]
            entry = free & inside & (source >= 0) & (applied != 0)
            rows.append(number[entry])
            cols.append(source[entry])
            values.append(applied[entry])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        indices = torch.stack([torch.cat(rows), torch.cat(cols)])
        coo = torch.sparse_coo_tensor(indices, torch.cat(values), (n, n), check_invariants=False)
        return coo.coalesce().to_sparse_csr()


def _hole_window(fill: Tensor, margin: int) -> tuple[slice, slice] | None:
    """Rows and columns of the bounding box of ``fill`` ``(H, W)`` grown by ``margin``
    (clipped to the image); None when nothing is to be filled. The normal operator of
    :func:`smooth_fill` of order ``k`` reaches ``k`` px, so CG on this window with
    ``margin = k`` is the same linear system as on the whole image: the window's own
    border padding only ever meets zeros."""
    rows, cols = fill.any(1).nonzero().flatten(), fill.any(0).nonzero().flatten()
    if rows.numel() == 0:
        return None
    H, W = fill.shape
    top, bottom = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, H)
    left, right = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, W)
    return slice(top, bottom), slice(left, right)


def low_rank_fills(
    image: Tensor, fill: Tensor, start: Tensor, ranks: Sequence[int], *, iters: int = 100, ladder: bool = True
) -> list[Tensor]:
    r"""Hard-impute completions at the increasing ranks ``ranks``, each channel one
    ``H x W`` matrix: :math:`X \leftarrow P_\Omega(Y) + P_{\Omega^\perp}(\mathrm{clamp}(T_r(X), 0, 1))`,
    ``iters`` sweeps per rank, :math:`T_r` the best rank-``r`` approximation.

    With ``ladder``, rank ``r`` starts from the rank before it (``start`` for the first);
    otherwise every rank starts from ``start``. Alternating projection is not convex and
    either way can stall at a wrong fixed point: a planted rank-2 image behind a block
    ends at 19 % error at rank 2 from the biharmonic start, at 3e-16 via rank 1
    (``tests/test_tasks.py``), while smooth rings are completed at rank 5 directly and
    missed via the ladder. :math:`T_r` is tracked by one step of subspace
    iteration per sweep (``Q`` ``(C, W, r)`` carried over, new columns from the right
    singular vectors of ``start``): thin products and QRs of ``(C, *, r)`` instead of an
    SVD per sweep. ``image``, ``start`` ``(C, H, W)``; ``fill`` bool ``(H, W)``; returns
    one ``(C, H, W)`` per rank, in [0, 1] under ``fill`` and ``image`` elsewhere.
    """
    if not ranks:
        return []
    x = start
    basis = torch.linalg.svd(x, full_matrices=False).Vh.transpose(-1, -2)  # (C, W, min(H, W))
    q = basis[..., :0]
    fills = []
    for rank in ranks:
        if not ladder:
            x, q = start, basis[..., :0]
        q = torch.linalg.qr(torch.cat([q, basis[..., q.shape[-1] : rank]], dim=-1)).Q
        for _ in range(iters):
            u = torch.linalg.qr(x @ q).Q
            coefficients = u.transpose(-1, -2) @ x  # (C, r, W)
            q = torch.linalg.qr(coefficients.transpose(-1, -2)).Q
            x = torch.where(fill, (u @ coefficients).clamp(0, 1), image)
        fills.append(x)
    return fills


def dilate(mask: Tensor, radius: int) -> Tensor:
    """Pixels with a True pixel of ``mask`` ``(..., H, W)`` in the ``(2 radius + 1)``-square
    around them (in their own frame)."""
    flat = mask.to(torch.float32).reshape(-1, 1, *mask.shape[-2:])
    return (F.max_pool2d(flat, 2 * radius + 1, 1, radius) > 0).reshape(mask.shape)


def wide_hole(fill: Tensor, radius: int) -> Tensor:
    """Pixels of ``fill`` ``(..., H, W)`` with no observed pixel in the ``(2 radius + 1)``-square around them."""
    return ~dilate(~fill, radius)


def choose_start(
    image: Tensor, fill: Tensor, *, ranks: Sequence[int] = START_RANKS, margin_db: float = 2.0
) -> tuple[Tensor, dict[str, object]]:
    """The start of the refinement: :func:`biharmonic_fill`, or :func:`low_rank_fills` at the
    rank that a held-out test picks, when the mask has wide holes and that rank wins.

    Smooth interpolation is right for thin holes (drops, text); a wide hole in a
    structured image (a facade's block) is filled far better by the rows and columns that
    repeat across it. The test runs on 2x2 block means (:func:`held_out_factor`,
    :func:`reduce_masked`) of images of 256 px and more: it hides the hole mask shifted by
    a third of the image (three shifts; pixels within 4 px of the real hole excluded, 2
    on the reduced copy), completes each way, and scores the squared error on the hidden
    pixels. The low-rank fill is taken only when its error
    is ``margin_db`` dB below the biharmonic's; otherwise the biharmonic one is kept. Masks
    where under ``WIDE_FRACTION`` of the missing pixels are farther than 4 px from an
    observed one skip the test (a few wide spots in thin scribbles), and so do holes too
    big for a shifted copy to land on enough known pixels. Returns ``(start,
    details)``; ``details["start"]`` says which (``"biharmonic"``, ``"rank R"`` or
    ``"rank R (ladder)"``, see :func:`low_rank_fills`; both kinds are tested).
    """
    smooth = biharmonic_fill(image, fill)
    details: dict[str, object] = {"start": "biharmonic"}
    if int(wide_hole(fill, WIDE_HOLE_RADIUS).sum()) < WIDE_FRACTION * int(fill.sum()):
        return smooth, details
    # The candidates are tried on a copy reduced by block means: a rank-r image stays of
    # rank <= r (the means are A X B^T), and the held-out errors rank them alike.
    factor = held_out_factor(*fill.shape)
    small_image, small_fill = reduce_masked(image, fill, factor)
    radius = max(1, WIDE_HOLE_RADIUS // factor)
    h, w = small_fill.shape
    near = dilate(small_fill, radius)
    # The direct first rank is the ladder's first step: tried once.
    candidates = [(True, rank) for rank in ranks] + [(False, rank) for rank in ranks[1:]]
    errors = torch.zeros(len(candidates) + 1, dtype=torch.float64)
    tests = 0
    for shift in ((h // 3, 0), (0, w // 3), (h // 3, w // 3)):
        hidden = torch.roll(small_fill, shift, (0, 1)) & ~near
        if int(hidden.sum()) < 0.3 * int(small_fill.sum()):
            continue
        both = small_fill | hidden
        blanked = small_image.masked_fill(both, 0)
        base = biharmonic_fill(blanked, both)
        fills = [base.clamp(0, 1), *low_rank_fills(blanked, both, base, ranks)]
        fills += low_rank_fills(blanked, both, base, ranks[1:], ladder=False)
        errors += torch.stack([(f - small_image)[:, hidden].square().mean() for f in fills]).double().cpu()
        tests += 1
    if not tests:
        return smooth, details
    best = int(errors[1:].argmin())
    gain_db = 10 * math.log10(float(errors[0]) / max(float(errors[1 + best]), 1e-20))
    details["start_test_gain_db"] = round(gain_db, 2)
    if gain_db < margin_db:
        return smooth, details
    ladder, rank = candidates[best]
    details["start"] = f"rank {rank}" + (" (ladder)" if ladder else "")
    used = [r for r in ranks if r <= rank] if ladder else [rank]
    return low_rank_fills(image, fill, smooth, used)[-1], details


#: The held-out test of :func:`choose_start` runs on means of 2 x 2 blocks when that copy
#: keeps at least ``TEST_SIDE`` pixels on its shorter side. Measured (TNNR images 1-9 with
#: both square masks, the facade block, a 128 px block in the 512x512 astronaut): the
#: same decisions at 2x2 but one (TNNR 8's small squares: rank 8 for rank 12, 26.10 dB
#: for 26.01), at 0.4-0.6 of the time; 4x4 and 3x3 blocks flipped the astronaut to rank
#: 3, a worse start (8.2 dB for 10.6 dB): coarser copies lose the texture that makes a
#: photo high-rank.
TEST_FACTOR = 2
TEST_SIDE = 128


def held_out_factor(height: int, width: int) -> int:
    """The block size (1 or ``TEST_FACTOR``) of :func:`choose_start`'s held-out test for
    ``height x width`` images."""
    return TEST_FACTOR if min(height, width) >= TEST_FACTOR * TEST_SIDE else 1


def reduce_masked(image: Tensor, fill: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """Means of ``factor x factor`` blocks of ``image`` ``(C, H, W)``, and the blocks
    with any pixel of ``fill`` ``(H, W)`` as the reduced mask (their means are zeroed):
    ``(C, H // k, W // k)``, ``(H // k, W // k)``. A factor of 1 returns the inputs."""
    if factor == 1:
        return image, fill
    small = F.avg_pool2d(image[None], factor)[0]
    small_fill = F.max_pool2d(fill.to(image.dtype)[None, None], factor)[0, 0] > 0
    return small.masked_fill(small_fill, 0), small_fill


def _laplacian_adjoint(y: Tensor) -> Tensor:
    """Adjoint of :func:`_laplacian` in closed form: every output scatters to its four
    neighbours in the padded frame, then the padded border folds back onto the edge
    pixels it replicated (the frame's corners are never read)."""
    p = F.pad(y.unsqueeze(0), (2, 2, 2, 2))[0]  # p[a + 2, b + 2] = y[a, b]
    q = p[:, 2:, 1:-1] + p[:, :-2, 1:-1] + p[:, 1:-1, 2:] + p[:, 1:-1, :-2]  # (C, H + 2, W + 2)
    x = q[:, 1:-1, 1:-1].clone()
    x[:, 0] += q[:, 0, 1:-1]
    x[:, -1] += q[:, -1, 1:-1]
    x[:, :, 0] += q[:, 1:-1, 0]
    x[:, :, -1] += q[:, 1:-1, -1]
    return x - 4 * y


#: Holes are clustered on a grid of squares of this side: squares that hold a missing
#: pixel and touch (8 neighbours) make one region. Free pixels of two regions are then at
#: least this far apart, and the biharmonic systems of regions farther than 2 px apart
#: do not couple: solving each on its own box is solving the whole.
REGION_BLOCK = 32
#: Known pixels kept around a region's holes: the biharmonic operator reads 2 px.
REGION_MARGIN = 8
#: A region with wide holes is tested on its box grown by this many times its size on
#: each side. Measured on the 512x512 astronaut's 128 px block: grown once, the test
#: (on 480 x 480) picked rank 2 (9.86 dB against biharmonic's 13.97); grown twice it sees
#: the whole photo, as before regions.
CONTEXT = 2
#: Clusters with a box wider than this (px) skip the held-out test and are solved in
#: pieces with the biharmonic fill: there the test is a global low-rank completion of a
#: context of the whole photo (minutes at 12 MP), and such a cluster is, in the cases we
#: have, scribbles joined across the photo (thick ones, 9-21 px, have 10 % or more of
#: their pixels in wide holes), not one hole. One hole this wide gets no low-rank start.
TEST_MAX_SIDE = 1024
#: A cluster of thin holes wider than this (px) is solved in squares of this side, each
#: with ``OVERLAP`` px of the cluster around it: the squares go to the workers, and the
#: biharmonic fill of a thin hole is set by its near sides, so the cut ``OVERLAP`` px away
#: barely reaches in. A CG step costs the free pixels, not the box (:func:`_conjugate_gradients`),
#: so the squares need not be small, but each one's sparse matrix is built at once.
#: Measured, the 12 MP photo's start (2 workers, scribbles): 104 squares of 256 px 19.8 s,
#: 37 of 512 13.9 s, 12 of 1024 11.6 s (the overlaps are solved twice), 26.71 dB each; a
#: 12 MP random 60 % drop (the start alone, peak of the process): 256 px 31.0 s 0.90 GiB,
#: 512 23.9 s 1.13 GiB, 1024 24.2 s 1.94 GiB.
PIECE, OVERLAP = 512, 32


def hole_regions(fill: Tensor, block: int = REGION_BLOCK) -> tuple[Tensor, list[tuple[slice, slice]]]:
    """Clusters of the missing pixels of ``fill`` ``(H, W)``: a label per ``block``-square
    ``(ceil(H / block), ceil(W / block))`` (-1 where none is missing; labels 0..n-1) and
    each cluster's bounding box of squares in pixels. Connected components of the
    occupied squares (8 neighbours), by union-find on the host: a 12 MP image has about
    12,000 squares."""
    occupied = F.max_pool2d(fill[None, None].float(), block, ceil_mode=True)[0, 0] > 0
    cells = [tuple(c) for c in occupied.nonzero().cpu().tolist()]
    parent = {c: c for c in cells}

    def root(c):
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for r, c in cells:
        for dr, dc in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
            other = (r + dr, c + dc)
            if other in parent:
                parent[root(other)] = root((r, c))
    roots = sorted({root(c) for c in cells})
    number = {r: k for k, r in enumerate(roots)}
    labels = torch.full(occupied.shape, -1, dtype=torch.long)
    extent: dict[int, list[int]] = {}
    for r, c in cells:
        k = number[root((r, c))]
        labels[r, c] = k
        box = extent.setdefault(k, [r, r, c, c])
        box[:] = [min(box[0], r), max(box[1], r), min(box[2], c), max(box[3], c)]
    H, W = fill.shape
    boxes = [
        (slice(top * block, min((bottom + 1) * block, H)), slice(left * block, min((right + 1) * block, W)))
        for top, bottom, left, right in (extent[k] for k in range(len(roots)))
    ]
    return labels.to(fill.device), boxes


def start_by_region(
    image: Tensor,
    fill: Tensor,
    *,
    test: bool = True,
    smooth: str = "biharmonic",
    ranks: Sequence[int] = START_RANKS,
    margin_db: float = 2.0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, dict[str, object]]:
    """The start of the refinement, a cluster of holes (:func:`hole_regions`) at a time:
    the ``smooth`` fill (:data:`SMOOTH_FILLS`) on the cluster's box grown by :data:`REGION_MARGIN`, or, when
    ``test`` and the cluster has wide holes, :func:`choose_start` on its box grown by
    :data:`CONTEXT` times its own size (the held-out test needs known pixels around the
    hole; not for clusters wider than :data:`TEST_MAX_SIDE`). A cluster of thin holes
    larger than :data:`PIECE` (scribbles across a photo join into one) is solved a
    ``PIECE`` square at a time, each on the square grown by
    :data:`OVERLAP`. Other clusters' holes inside a box are solved with it and not kept.
    The pieces share :func:`lrrtool.workers.run_all`'s workers; ``progress(done, total)``
    as they finish. Returns ``(start, details)`` as :func:`choose_start` does; with
    several clusters ``details["start"]`` names the starts used, most frequent first, and
    ``details["start_regions"]`` counts the clusters."""
    labels, boxes = hole_regions(fill)
    H, W = fill.shape
    pieces = []  # (written box, own pixels there, crop, wide)
    for k, (rows, cols) in enumerate(boxes):
        cells = labels[rows.start // REGION_BLOCK : -(-rows.stop // REGION_BLOCK),
                       cols.start // REGION_BLOCK : -(-cols.stop // REGION_BLOCK)] == k  # fmt: skip
        cells = cells.repeat_interleave(REGION_BLOCK, 0).repeat_interleave(REGION_BLOCK, 1)
        own = fill[rows, cols] & cells[: rows.stop - rows.start, : cols.stop - cols.start]
        size = (rows.stop - rows.start, cols.stop - cols.start)
        wide = test and max(size) <= TEST_MAX_SIDE
        wide = wide and int(wide_hole(own, WIDE_HOLE_RADIUS).sum()) >= WIDE_FRACTION * int(own.sum())
        if wide or max(size) <= PIECE:
            grow = (CONTEXT * size[0], CONTEXT * size[1]) if wide else (REGION_MARGIN, REGION_MARGIN)
            pieces.append(((rows, cols), own, grown_box(rows, cols, grow, H, W), wide))
            continue
        for top in range(0, size[0], PIECE):
            for left in range(0, size[1], PIECE):
                part = own[top : top + PIECE, left : left + PIECE]
                if bool(part.any()):
                    square = (slice(rows.start + top, rows.start + top + part.shape[0]),
                              slice(cols.start + left, cols.start + left + part.shape[1]))  # fmt: skip
                    pieces.append((square, part, grown_box(*square, (OVERLAP, OVERLAP), H, W), False))

    def solve(piece) -> tuple[Tensor, dict[str, object]]:
        (rows, cols), own, crop, wide = piece
        mask = fill[crop]
        if wide:
            filled, details = choose_start(image[:, crop[0], crop[1]], mask, ranks=ranks, margin_db=margin_db)
        else:
            filled, details = SMOOTH_FILLS[smooth](image[:, crop[0], crop[1]], mask), {"start": smooth}
        top, left = rows.start - crop[0].start, cols.start - crop[1].start
        return filled[:, top : top + own.shape[0], left : left + own.shape[1]], details

    out = image.clone()
    chosen: dict[str, int] = {}
    gains = []
    for ((rows, cols), own, _, _), (filled, details) in zip(pieces, run_all(solve, pieces, done=progress), strict=True):
        out[:, rows, cols] = torch.where(own, filled, out[:, rows, cols])
        chosen[details["start"]] = chosen.get(details["start"], 0) + 1
        if "start_test_gain_db" in details:
            gains.append(details["start_test_gain_db"])
    names = sorted(chosen, key=lambda name: -chosen[name])
    result: dict[str, object] = {"start": ", ".join(names) or smooth}
    if len(boxes) > 1:
        result["start_regions"] = len(boxes)
    if len(pieces) > len(boxes):
        result["start_pieces"] = len(pieces)
    if gains:
        result["start_test_gain_db"] = gains[0] if len(gains) == 1 else gains
    return out, result


def grown_box(rows: slice, cols: slice, grow: tuple[int, int], height: int, width: int) -> tuple[slice, slice]:
    """The box ``rows``, ``cols`` grown by ``grow`` (rows, columns) each way, clipped to ``height x width``."""
    return (
        slice(max(rows.start - grow[0], 0), min(rows.stop + grow[0], height)),
        slice(max(cols.start - grow[1], 0), min(cols.stop + grow[1], width)),
    )
