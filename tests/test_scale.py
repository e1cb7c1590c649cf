"""Images at scale: tiles of patch groups give the groups and the result of one tile,
the start works a cluster of holes at a time, the memory budget is checked before the
work, the workers share the tiles, and progress has a total from the first report."""

import threading

import pytest
import torch

from lrrtool import workers
from lrrtool.core import LowRankRegularizer
from lrrtool.errors import LRRError
from lrrtool.patches import PatchGroups, tile_crops
from lrrtool.priors import LowRankPrior, PatchGroupLift
from lrrtool.solvers import Progress
from lrrtool.tasks.budget import patch_plan, patch_tile, plan_tile, reference_count, tile_memory
from lrrtool.tasks.denoise import denoise
from lrrtool.tasks.inpaint import InpaintSettings, inpaint
from lrrtool.tasks.starts import PIECE, biharmonic_fill, hole_regions, start_by_region


def by_reference(index: torch.Tensor, *values: torch.Tensor):
    order = index[:, 0].argsort()
    return index[order], *(v[order] for v in values)


@pytest.fixture
def image(rng):
    return torch.rand(3, 41, 37, generator=rng)


@pytest.mark.parametrize(("tile", "select"), [(8, False), (12, True), (20, False)])
def test_tiles_find_the_same_groups_and_fold_the_same(image, rng, tile, select):
    options = {"patch": 4, "group": 9, "stride": 4, "window": 5, "search_step": 1}
    mask = (torch.rand(image.shape[-2:], generator=rng) < 0.03) if select else None
    whole = PatchGroups(image, select=mask, **options)
    tiled = PatchGroups(image, select=mask, tile=tile, batch=7, **options)
    assert len(tiled.tiles) > 1 and tiled.count == whole.count
    if mask is not None:
        assert whole.count == reference_count(image.shape, patch=4, stride=4, select=mask)
    index, means = by_reference(whole.index, whole.group_means(image))
    tiled_index, tiled_means = by_reference(tiled.index, tiled.group_means(image))
    assert torch.equal(index, tiled_index)
    assert torch.allclose(means, tiled_means, atol=1e-6)
    assert torch.equal(whole.covered, tiled.covered) and torch.allclose(whole.weight, tiled.weight)
    # an estimate that depends on the group's place in the batch: the parts must line up
    reference_of = {int(r): k for k, r in enumerate(whole.index[:, 0])}
    places = torch.tensor([reference_of[int(r)] for r in tiled.index[:, 0]])

    def work_whole(groups, part):
        return groups * 0.5 + torch.arange(part.start, part.start + groups.shape[0])[:, None, None] * 1e-3

    def work_tiled(groups, part):
        return groups * 0.5 + places[part][:, None, None] * 1e-3

    assert torch.allclose(whole.map(image, work_whole), tiled.map(image, work_tiled), atol=1e-5)
    assert torch.allclose(whole.average(whole.gather(image)), tiled.average(tiled.gather(image)), atol=1e-6)


def test_tile_crops_cover_every_reference_once():
    H, W, patch, stride = 50, 33, 5, 3
    seen = torch.zeros(H - patch + 1, W - patch + 1, dtype=torch.int)
    for rows, cols, (top, bottom, left, right) in tile_crops(H, W, patch=patch, stride=stride, window=4, side=9):
        assert rows.start % stride == 0 and cols.start % stride == 0  # the crop's grid is the image's
        seen[rows.start + top : rows.start + bottom, cols.start + left : cols.start + right] += 1
        assert rows.stop <= H and cols.stop <= W
    assert bool((seen == 1).all())
    with pytest.raises(LRRError, match="multiple of the stride"):
        tile_crops(H, W, patch=patch, stride=stride, window=4, side=10)


def test_tiled_denoising_is_the_untiled_result(rng):
    clean = torch.linspace(0, 1, 48)[None, :, None] * torch.linspace(0, 1, 44)[None, None, :]
    noisy = (clean + 0.1 * torch.randn(1, 48, 44, generator=rng)).float()
    prior = lambda tile: LowRankPrior(  # noqa: E731
        LowRankRegularizer("lnn", gamma=1e-3), PatchGroupLift(patch=5, group=8, stride=4, window=6, tile=tile)
    )
    whole, tiled = prior(None), prior(12)
    whole.refresh(noisy)
    tiled.refresh(noisy)
    tau = torch.full((whole.lift.groups.count,), 0.02)
    assert torch.allclose(whole.prox(noisy, tau, 0.01), tiled.prox(noisy, tau, 0.01), atol=1e-5)


def test_budget_sizes_the_tiles_and_refuses_what_cannot_fit():
    options = {"patch": 5, "group": 64, "stride": 4, "window": 15, "search_step": 1, "itemsize": 4}
    small = tile_memory(3, 16, **options)
    assert small < tile_memory(3, 64, **options) < tile_memory(3, 400, **options)
    assert plan_tile((3, 256, 256), budget=2**40, workers=1, **options) is None  # one tile
    side = plan_tile((3, 4000, 3000), budget=2 * tile_memory(3, 200, **options), workers=2, **options)
    assert side is not None and side % 4 == 0 and 100 <= side <= 200
    big = torch.zeros(3, 600, 800)
    with pytest.raises(LRRError, match=r"memory_gib 0\.5 is too small for a 800x600 image") as error:
        patch_tile(big, 0.5, buffers=7, **{k: v for k, v in options.items() if k != "itemsize"})
    assert error.value.parameter == "memory_gib"
    with pytest.raises(LRRError, match=r"memory_gib 0\.3 is too small") as error:
        denoise(torch.rand(1, 40, 40), 0.1, memory_gib=0.3)
    with pytest.raises(LRRError, match="holds every patch group"):
        inpaint(big, torch.rand(600, 800) < 0.5, InpaintSettings(solver="adam"), memory_gib=0.6)


def test_a_tight_budget_trades_a_smaller_batch_for_larger_tiles():
    """A 12 MP photo in 2 GiB: batches of 1024 leave tiles of about 100 positions, mostly
    search margin; the plan takes a smaller batch for tiles twice as wide. With room to
    spare it keeps the batch of 1024 and the tile of before."""
    options = {"buffers": 7, "patch": 5, "group": 64, "stride": 4, "window": 15, "search_step": 1}
    try:
        workers.set_workers(2)
        photo = torch.empty(3, 3024, 4032)
        tile, batch = patch_plan(photo, 2.0, **options)
        assert batch < 1024 and tile >= 2 * patch_tile(photo, 2.0, **options)
        small = torch.empty(3, 1000, 1000)
        assert patch_plan(small, 2.0, **options) == (patch_tile(small, 2.0, **options), 1024)
    finally:
        workers.set_workers(None)


def test_holes_apart_are_regions_and_solved_as_one_system(rng):
    image = torch.rand(2, 90, 120, generator=rng)
    fill = torch.zeros(90, 120, dtype=torch.bool)
    fill[10:14, 5:40] = True  # a stroke
    fill[12:30, 38:41] = True  # touching it: the same region
    fill[70:80, 90:115] = True  # far away
    fill[85:90, 0:3] = True  # in a corner
    for block in (16, 32):
        labels, boxes = hole_regions(fill, block=block)
        assert len(boxes) == 3 and int(labels.max()) == 2
    start, details = start_by_region(image, fill, test=False)
    whole = biharmonic_fill(image, fill, iters=2000, tol=1e-9)
    assert torch.allclose(start, whole, atol=2e-3)  # the same system, up to CG's tolerance
    assert torch.equal(start[:, ~fill], image[:, ~fill])
    assert details == {"start": "biharmonic", "start_regions": 3}


def test_workers_share_items_keep_order_and_raise(rng):
    seen = set()

    def work(k: int) -> int:
        seen.add(threading.current_thread().name)
        assert workers.workers() == 1  # no nesting inside a worker
        return k * k

    done = []
    try:
        workers.set_workers(2)
        assert workers.run_all(work, range(20), done=lambda d, t: done.append((d, t))) == [k * k for k in range(20)]
        assert done[-1] == (20, 20) and len(done) == 20
        assert any(name.startswith("lrrtool-worker") for name in seen)
        with pytest.raises(ZeroDivisionError):
            workers.run_all(lambda k: 1 // (k - 7), range(12))
    finally:
        workers.set_workers(None)


@pytest.mark.parametrize("task", ["denoise", "inpaint"])
def test_progress_has_a_total_from_the_first_report_and_grows(task, rng):
    image = torch.rand(3, 40, 44, generator=rng)
    reports: list[Progress] = []
    if task == "denoise":
        denoise(image, 0.1, memory_gib=2.0, callback=reports.append)
    else:
        inpaint(image, torch.rand(40, 44, generator=rng) < 0.2, memory_gib=2.0, callback=reports.append)
    assert reports[0].total >= 1 and reports[0].iteration == 0
    for phase in {r.phase for r in reports}:
        done = [r.iteration + r.part for r in reports if r.phase == phase]
        assert done == sorted(done) and all(r.total >= 1 for r in reports)
    assert any(0 < r.part < 1 for r in reports if r.phase == "solve")


def test_a_long_thin_cluster_is_solved_in_pieces_close_to_one_solve(rng):
    width = 2 * PIECE + 200
    image = torch.linspace(0, 1, width)[None, None, :].expand(1, 60, width)
    image = image + 0.05 * torch.rand(1, 60, width, generator=rng)
    fill = torch.zeros(60, width, dtype=torch.bool)
    fill[25:30, 10 : width - 10] = True  # one stroke across the image: three pieces
    start, details = start_by_region(image, fill)
    assert details["start"] == "biharmonic" and details["start_pieces"] == 3
    whole = biharmonic_fill(image, fill, iters=3000, tol=1e-9)
    assert float((start - whole)[:, fill].abs().max()) < 0.01  # the cuts barely reach in


def test_tiles_add_their_sums_in_tile_order_whatever_order_they_finish(image, monkeypatch):
    """Tiles overlap and float sums depend on their order: a run whose later tiles finish
    first gives the bits of the run in one thread (it added in finishing order before)."""
    import threading
    import time

    import lrrtool.patches as patches_module

    options = {"patch": 4, "group": 9, "stride": 2, "window": 5, "search_step": 1}
    groups = PatchGroups(image, tile=12, batch=7, **options)
    assert len(groups.tiles) > 3

    def shrink(patches, part):
        return patches * (0.3 + torch.arange(part.start, part.stop).view(-1, 1, 1).float().sin() / 7)

    in_order = groups.map(image, shrink)

    def backwards(work, items, *, count=None, done=None):  # the last tile finishes first
        items = list(items)
        results = [None] * len(items)

        def run(k):
            time.sleep(0.02 * (len(items) - k))
            results[k] = work(items[k])

        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(items))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    monkeypatch.setattr(patches_module, "run_all", backwards)
    assert torch.equal(groups.map(image, shrink), in_order)
