"""Pure, tiled retrieval ranking: the rank of the best correct candidate of every query, in both directions.

One score matrix ``S = query · candidatesᵀ`` (fp32) is read in ``tile_size × tile_size`` tiles and never
materialised. Each tile gives the row ranks (query → candidates, e.g. image→text) *and* the column ranks
(candidate → queries, text→image) of its entries, so both directions cost one matrix product plus a few
element-wise passes over the tile, and a pair has the same score in both directions. Extra memory is
about ``tile_size² · 8`` bytes (the fp32 tile and an fp32 0/1 buffer) plus two gathered ``tile_size × D``
blocks, a 4 MB batch of cells and ``O(N + M)`` numbers (ids, counts, row norms), independent of N and M
beyond those: no ``N × D`` copy either (cosines divide each gathered block by its rows' norms).

Rank convention (0-based; ``rank < K`` means a hit at Recall@K):

* ``TieRule.PESSIMISTIC`` (default): rank = number of *incorrect* candidates whose score is **greater than or
  equal to** the best correct candidate's score. Ties are counted against the model, so a collapsed encoder
  (every score equal) gets Recall@K = K-incorrect-fraction ≈ 0, never a perfect score.
* ``TieRule.OPTIMISTIC``: rank = number of incorrect candidates with a **strictly greater** score (open_clip-
  style ``argsort`` results fall between the two).

Other correct candidates never push a query's rank down: Recall@K is the hit rate "at least one correct
candidate in the top K" (torchmetrics ``RetrievalHitRate``), not the fraction of all positives retrieved.
A query without any correct candidate gets rank ``-1`` (reported, not silently counted as a miss).

Why one pass suffices: correct candidates are id equalities (:class:`IdPositives`), so they lie inside the
connected components of the "same id" graph. Rows and columns are visited in component order, which puts
every correct pair into a few small cells (``cell × cell``, 64 × 64 on CPU) near the diagonal. A pre-pass
over only those cells finds each row's and column's best correct score and how many correct candidates
reach it; the main pass then counts, per row and per column, the entries ``>=`` (pessimistic) or ``>``
(optimistic) that score and subtracts the correct ones, so no positive mask exists outside the pre-pass.
The main pass scores those cells again with the pre-pass's cell-sized products, and a pair's score does not
depend on the product it came from (:func:`products_agree`, checked; else cells are whole tiles), so every
comparison sees one, bit-identical, score per pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import torch

#: ``positives_fn(start, end) -> (end-start, M)`` bool mask of the correct candidates of queries
#: ``start:end``.
PositivesFn = Callable[[int, int], torch.Tensor]

#: Default tile edge: 1024² fp32 (4 MB) stays in a CPU's cache; a GPU wants large tiles (fewer launches).
CPU_TILE, CUDA_TILE = 1024, 8192
#: Edge of the cells in which correct pairs are scored: the pre-pass costs about ``cell / N`` of the product,
#: and one small product per cell (a GPU prefers fewer, larger cells).
CPU_CELL, CUDA_CELL = 64, 512


class TieRule(str, Enum):
    """How candidates whose score equals the best correct candidate's score are ranked."""

    PESSIMISTIC = "pessimistic"
    OPTIMISTIC = "optimistic"


@dataclass
class RankResult:
    """Ranks of one direction.

    Attributes:
        ranks: ``(N,)`` int64 0-based rank of each query's best correct candidate; ``-1`` if it has none.
        topk_indices: ``(N, k)`` int64 candidate indices of the ``k`` highest scores, best first (exactly
            equal scores in an unspecified order), or ``None`` when no top-k was asked for.
        topk_scores: ``(N, k)`` float scores matching ``topk_indices`` (or ``None``).
    """

    ranks: torch.Tensor
    topk_indices: torch.Tensor | None = None
    topk_scores: torch.Tensor | None = None


@dataclass
class BidirectionalRanks:
    """Output of :func:`bidirectional_ranks`: ``rows`` ranks each query among the candidates (with the top-k),
    ``cols`` ranks each candidate among the queries (``None`` when not asked for)."""

    rows: RankResult
    cols: RankResult | None


class IdPositives:
    """Correct candidates by id: candidate j is correct for query i if ANY ``(query_ids, candidate_ids)`` pair
    matches (``query_ids[i] == candidate_ids[j]``), e.g. same study id, or (duplicate reports) same text id.

    Also a :data:`PositivesFn` (``positives(start, end)`` gives the mask of queries ``start:end``).
    """

    def __init__(self, *pairs: tuple[torch.Tensor, torch.Tensor]) -> None:
        if not pairs:
            raise ValueError("positives need at least one (query_ids, candidate_ids) pair")
        lengths = {(int(q.shape[0]), int(c.shape[0])) for q, c in pairs}
        if len(lengths) != 1 or any(q.ndim != 1 or c.ndim != 1 for q, c in pairs):
            raise ValueError("every (query_ids, candidate_ids) pair must be 1-D with the same lengths, got "
                             f"{[(tuple(q.shape), tuple(c.shape)) for q, c in pairs]}")
        self.pairs = tuple((q.to(torch.long), c.to(torch.long)) for q, c in pairs)
        self.num_queries, self.num_candidates = lengths.pop()

    def __call__(self, start: int, end: int) -> torch.Tensor:
        return self.block(torch.arange(start, end, device=self.pairs[0][0].device), None)

    def block(self, rows: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        """``(..., r, c)`` mask of queries ``rows`` ``(..., r)`` against candidates ``cols`` ``(..., c)``
        (``None``: all candidates)."""
        mask = None
        for q_ids, c_ids in self.pairs:
            m = q_ids[rows].unsqueeze(-1) == (c_ids if cols is None else c_ids[cols]).unsqueeze(-2)
            mask = m if mask is None else mask | m
        return mask

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Connected-component label of every query and every candidate in the "same id" graph (min label
        propagation with pointer jumping); correct pairs always share a label."""
        n, m = self.num_queries, self.num_candidates
        device = self.pairs[0][0].device
        label = torch.arange(n + m, device=device)
        groups = [torch.unique(torch.cat([q, c]), return_inverse=True)[1] for q, c in self.pairs]
        while True:
            before = label
            for inv in groups:
                low = torch.full((int(inv.max()) + 1,), n + m, dtype=torch.long, device=device)
                low = low.scatter_reduce(0, inv, label, reduce="amin")
                label = torch.minimum(label, low[inv])
            label = label[label]  # label[x] <= x lies in x's component, so jumping keeps labels valid
            if torch.equal(label, before):
                return label[:n], label[n:]


def positives_from_ids(*pairs: tuple[torch.Tensor, torch.Tensor]) -> IdPositives:
    """:class:`IdPositives` of the given ``(query_ids, candidate_ids)`` pairs."""
    return IdPositives(*pairs)


def positives_from_index(correct_index: torch.Tensor, num_candidates: int) -> IdPositives:
    """Exactly one correct candidate per query, ``correct_index[i]``."""
    return IdPositives((correct_index, torch.arange(num_candidates, device=correct_index.device)))


# ------------------------------------------------------------------------------------------------ products
_AGREE: dict[tuple, bool] = {}


def products_agree(device: torch.device, dim: int, tile: int, shapes: frozenset[tuple[int, int]]) -> bool:
    """Whether this device's GEMM gives a pair the same fp32 score in an ``h × w`` product, for every
    ``(h, w)`` in ``shapes``, as in a ``tile × tile`` product (checked once per device, size and shapes).

    A score's last bit depends on the kernel, and the kernel on the product's shape (oneDNN on a CPU agrees
    from about 8 × 16 up; matrix-vector shapes and GPU kernels differ). Correct pairs are scored in cells;
    an incorrect candidate scored in a tile that truly ties with them (an identical report embedding, a
    collapsed encoder) must tie exactly, or rounding would break pessimistic ties.
    """
    key = (str(device), int(dim), int(tile), shapes)
    if key not in _AGREE:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(tile, dim, generator=g).to(device)
        b = torch.randn(tile, dim, generator=g).to(device)
        full = a @ b.t()  # one-off (about 1 % of a 10k × 10k metric on a CPU)
        _AGREE[key] = all(torch.equal(a[:h] @ b[:w].t(), full[:h, :w])
                          for h, w in shapes if (h, w) != (tile, tile))
    return _AGREE[key]


def _plan_products(device: torch.device, dim: int, n: int, m: int, tile: int, cell: int) -> tuple[int, bool]:
    """``(cell, pad)``: cells as asked and edge blocks as they are when every product shape used agrees;
    else edge blocks padded with zero rows to whole cells/tiles; else cells are whole tiles (exact always)."""
    def sizes(total: int, block: int) -> set[int]:
        return {min(block, total), total % block or block}

    shapes = {(h, w) for b in (tile, cell) for h in sizes(n, b) for w in sizes(m, b)}
    if products_agree(device, dim, tile, frozenset(shapes)):
        return cell, False
    if cell < tile and products_agree(device, dim, tile, frozenset({(cell, cell)})):
        return cell, True
    return tile, True


#: ``F.normalize``'s default ``eps``: a zero row stays zero.
_NORM_EPS = 1e-12


# ------------------------------------------------------------------------------------------------- layout
@dataclass
class _Layout:
    """Visiting order of rows and columns (component order) and the cells that may hold a correct pair.

    Cells are ``cell × cell`` squares of the reordered matrix; ``cells`` lists ``[cell row, cell column]``,
    sorted, and ``tile_cells`` maps a tile ``(row tile, column tile)`` to its range in ``cells``.
    """

    row_order: torch.Tensor  # sorted position -> query index
    col_order: torch.Tensor  # sorted position -> candidate index
    tile: int
    cell: int
    cells: list[list[int]]
    tile_cells: dict[tuple[int, int], tuple[int, int]]


def _component_ranges(row_lab: torch.Tensor, col_lab: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Row range and column range (start, count) of every component that has both rows and columns."""
    r_lab, r_cnt = torch.unique_consecutive(row_lab, return_counts=True)
    c_lab, c_cnt = torch.unique_consecutive(col_lab, return_counts=True)
    r_start, c_start = torch.cumsum(r_cnt, 0) - r_cnt, torch.cumsum(c_cnt, 0) - c_cnt
    at = torch.searchsorted(c_lab, r_lab).clamp(max=c_lab.numel() - 1)
    both = c_lab[at] == r_lab
    at = at[both]
    return r_start[both], r_cnt[both], c_start[at], c_cnt[at]


def _layout(positives: IdPositives, tile: int, cell: int) -> _Layout:
    row_lab, col_lab = positives.components()
    row_lab, row_order = torch.sort(row_lab, stable=True)
    col_lab, col_order = torch.sort(col_lab, stable=True)
    r_start, r_cnt, c_start, c_cnt = _component_ranges(row_lab, col_lab)
    # every cell of each component's (row range × column range) rectangle, enumerated without a Python loop
    fr_lo, fr_hi = r_start // cell, (r_start + r_cnt - 1) // cell
    fc_lo, fc_hi = c_start // cell, (c_start + c_cnt - 1) // cell
    n_fc = fc_hi - fc_lo + 1
    per = (fr_hi - fr_lo + 1) * n_fc
    comp = torch.repeat_interleave(torch.arange(per.numel(), device=per.device), per)
    offset = torch.arange(comp.numel(), device=per.device) - (torch.cumsum(per, 0) - per)[comp]
    fr, fc = fr_lo[comp] + offset // n_fc[comp], fc_lo[comp] + offset % n_fc[comp]
    n_fcells = -(-col_lab.numel() // cell)
    key = torch.unique(fr * n_fcells + fc)  # sorted, de-duplicated (components can share a cell)
    cells = torch.stack([key // n_fcells, key % n_fcells], 1)
    per_tile = tile // cell
    n_ct = -(-col_lab.numel() // tile)
    tkey = (cells[:, 0] // per_tile) * n_ct + cells[:, 1] // per_tile
    tkeys, counts = torch.unique_consecutive(tkey, return_counts=True)
    tile_cells, start = {}, 0
    for tk, c in zip(tkeys.tolist(), counts.tolist(), strict=True):
        tile_cells[(tk // n_ct, tk % n_ct)] = (start, start + c)
        start += c
    return _Layout(row_order=row_order, col_order=col_order, tile=tile, cell=cell, cells=cells.tolist(),
                   tile_cells=tile_cells)


class _Tiles:
    """Score blocks of the reordered matrix, fp32.

    Products are ``tile × tile`` (the main pass) or ``cell × cell`` (the cells that hold correct pairs, in
    the pre-pass and again in the main pass), plus the edge blocks. :func:`_plan_products` makes sure a pair
    has one score wherever it is computed: edge blocks are padded with zero rows when their shapes would
    score differently, and cells are whole tiles when cells and tiles would.
    """

    def __init__(self, query: torch.Tensor, candidates: torch.Tensor, query_rows: torch.Tensor | None,
                 candidate_rows: torch.Tensor | None, layout: _Layout, pad: bool,
                 normalize: bool = False) -> None:
        self.query, self.candidates, self.pad = query.contiguous(), candidates.contiguous(), pad
        # Row norms as F.normalize computes them; blocks are divided as they are gathered, so a unit-norm
        # copy of the N × D embeddings never exists and every score is bit-identical to F.normalize's.
        self.q_norms, self.c_norms = ((e.float().norm(2, dim=1, keepdim=True).clamp_min(_NORM_EPS)
                                       if normalize else None) for e in (self.query, self.candidates))
        self.q_index = self._index(layout.row_order, query_rows, query.shape[0])
        self.c_index = self._index(layout.col_order, candidate_rows, candidates.shape[0])
        self.n, self.m = layout.row_order.numel(), layout.col_order.numel()
        self.layout = layout
        size = layout.tile * layout.tile
        self.buf = torch.empty(size, dtype=torch.float32, device=query.device)
        self.hits_buf = torch.empty(size, dtype=torch.float32, device=query.device)

    @staticmethod
    def _index(order: torch.Tensor, rows: torch.Tensor | None, total: int) -> torch.Tensor | None:
        index = order if rows is None else rows.to(order.device, torch.long)[order]
        identity = index.numel() == total and torch.equal(index, torch.arange(total, device=index.device))
        return None if identity else index  # None: blocks are slices (no copy)

    def _block(self, emb: torch.Tensor, index: torch.Tensor | None, norms: torch.Tensor | None, lo: int,
               hi: int, size: int) -> torch.Tensor:
        block = (emb[lo:hi] if index is None else emb.index_select(0, index[lo:hi])).float()  # fp32 scores
        if norms is not None:  # in place only on a gathered copy, never on the caller's rows
            block = block / norms[lo:hi] if index is None else block.div_(norms.index_select(0, index[lo:hi]))
        if self.pad and hi - lo < size:
            block = torch.nn.functional.pad(block, (0, 0, 0, size - (hi - lo)))  # zero rows: a fixed shape
        return block

    def query_block(self, lo: int, size: int) -> torch.Tensor:
        """Sorted query rows ``lo:lo+size`` (zero rows past the end when padding)."""
        return self._block(self.query, self.q_index, self.q_norms, lo, min(lo + size, self.n), size)

    def candidate_block(self, lo: int, size: int) -> torch.Tensor:
        """Sorted candidate rows ``lo:lo+size`` (zero rows past the end when padding)."""
        return self._block(self.candidates, self.c_index, self.c_norms, lo, min(lo + size, self.m), size)

    def cell_scores(self, fr: int, fc: int) -> torch.Tensor:
        """Scores of cell ``(fr, fc)`` from its own ``cell × cell`` product, cut to the matrix."""
        c = self.layout.cell
        s = torch.mm(self.query_block(fr * c, c), self.candidate_block(fc * c, c).t())
        return s[: min(c, self.n - fr * c), : min(c, self.m - fc * c)]

    def tile_scores(self, rt: int, ct: int, a: torch.Tensor) -> torch.Tensor:
        """Tile ``(rt, ct)`` (``a``: its padded query block), cut to the matrix; its correct cells are
        scored by their own cell products."""
        t, c = self.layout.tile, self.layout.cell
        b = self.candidate_block(ct * t, t)
        out = torch.mm(a, b.t(), out=self.buf[: a.shape[0] * b.shape[0]].view(a.shape[0], b.shape[0]))
        span = self.layout.tile_cells.get((rt, ct))
        if span is not None and c < t:  # cell == tile: the tile product is the cell product
            for fr, fc in self.layout.cells[span[0]:span[1]]:
                i, j = fr * c - rt * t, fc * c - ct * t
                out[i:i + c, j:j + c] = torch.mm(a[i:i + c], b[j:j + c].t())
        return out[: min(t, self.n - rt * t), : min(t, self.m - ct * t)]

    def hits(self, shape: torch.Size) -> torch.Tensor:
        """A reused fp32 buffer for 0/1 comparison results (summing floats is faster than bools)."""
        return self.hits_buf[: shape[0] * shape[1]].view(shape[0], shape[1])


# ------------------------------------------------------------------------------------------------- passes
_CELL_BATCH_VALUES = 1 << 20  # scores per vectorised pre-pass step (4 MB)


def _cell_batches(tiles: _Tiles, positives: IdPositives):
    """Yield ``(rows, cols, masked)`` per batch of cells: ``(b, cell)`` sorted row/column positions
    (``n``/``m`` past the edge) and ``(b, cell, cell)`` scores, every entry but the correct pairs ``-inf``."""
    layout, n, m, c, dev = tiles.layout, tiles.n, tiles.m, tiles.layout.cell, tiles.buf.device
    step = torch.arange(c, device=dev)
    per_batch = max(1, _CELL_BATCH_VALUES // (c * c))
    for start in range(0, len(layout.cells), per_batch):
        batch = layout.cells[start:start + per_batch]
        scores = torch.full((len(batch), c, c), float("-inf"), device=dev)
        for j, (fr, fc) in enumerate(batch):
            cell_scores = tiles.cell_scores(fr, fc)
            scores[j, : cell_scores.shape[0], : cell_scores.shape[1]] = cell_scores
        cell_rc = torch.tensor(batch, device=dev)
        rows, cols = cell_rc[:, :1] * c + step, cell_rc[:, 1:] * c + step
        pos = positives.block(layout.row_order[rows.clamp(max=n - 1)],
                              layout.col_order[cols.clamp(max=m - 1)])
        pos &= (rows < n).unsqueeze(-1) & (cols < m).unsqueeze(-2)
        yield rows.clamp(max=n), cols.clamp(max=m), scores.masked_fill_(~pos, float("-inf"))


def _fold_best(best: torch.Tensor, count: torch.Tensor, index: torch.Tensor, values: torch.Tensor,
               correct: torch.Tensor) -> None:
    """Fold one batch of correct-pair scores into the running best score and its count per line.

    ``index`` ``(L,)`` line of each group of ``values``/``correct`` ``(L, w)``; a line may repeat."""
    batch_best = torch.full_like(best, float("-inf")).scatter_reduce_(0, index, values.amax(1), reduce="amax")
    at_best = ((values == batch_best[index].unsqueeze(1)) & correct).sum(1).to(count.dtype)
    batch_count = torch.zeros_like(count).scatter_add_(0, index, at_best)
    count.copy_(torch.where(batch_best > best, batch_count,
                            torch.where(batch_best == best, count + batch_count, count)))
    best.copy_(torch.maximum(best, batch_best))


def _best_correct(tiles: _Tiles, positives: IdPositives) -> tuple[torch.Tensor, ...]:
    """Pre-pass over the cells that may hold correct pairs: the best correct score of every row and column
    and how many correct entries reach it (ties among correct candidates are not counted against a query)."""
    n, m, dev = tiles.n, tiles.m, tiles.buf.device
    best_r = torch.full((n + 1,), float("-inf"), device=dev)  # slot n / m: cell rows past the edge
    best_c = torch.full((m + 1,), float("-inf"), device=dev)
    count_r = torch.zeros(n + 1, dtype=torch.float64, device=dev)
    count_c = torch.zeros(m + 1, dtype=torch.float64, device=dev)
    for rows, cols, masked in _cell_batches(tiles, positives):
        correct = masked > float("-inf")
        c = masked.shape[-1]
        _fold_best(best_r, count_r, rows.flatten(), masked.reshape(-1, c), correct.reshape(-1, c))
        _fold_best(best_c, count_c, cols.flatten(), masked.transpose(1, 2).reshape(-1, c),
                   correct.transpose(1, 2).reshape(-1, c))
    return best_r[:n], count_r[:n], best_c[:m], count_c[:m]


class _RowTopK:
    """Running top-k of every row across the column tiles of a row block.

    A tile's top-k lies in its k best groups of ``GROUP`` columns, so a tile costs one more read (group
    maxima by ``max_pool1d``), a top-k over its ``width / GROUP`` group maxima and a gather of ``k · GROUP``
    values per row, all dense. Gathered values are merged into the running lists by one top-k once
    ``MERGE_WIDTH`` of them are buffered per row (and at the end of the row block): on a CPU,
    ``torch.topk`` costs little per value but much per call and per row.
    """

    GROUP = 16
    MERGE_WIDTH = 2048

    def __init__(self, n: int, k: int, col_order: torch.Tensor) -> None:
        self.k, self.col_order, self.device = k, col_order, col_order.device
        self.values = torch.empty(n, k, device=self.device)
        self.indices = torch.empty(n, k, dtype=torch.long, device=self.device)

    def begin(self, rows: int) -> None:
        self.v = torch.full((rows, self.k), float("-inf"), device=self.device)
        self.pos = torch.zeros(rows, self.k, dtype=torch.long, device=self.device)  # sorted column position
        self.buffered: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.width = 0

    def update(self, s: torch.Tensor, c0: int) -> None:
        """Fold tile ``s`` (its first column at sorted position ``c0``) into the running lists."""
        if self.k == 1:  # top-1 (the dumps): a row maximum per tile, an earlier column wins a tie
            v, j = s.max(dim=1, keepdim=True)
            better = v > self.v
            self.v, self.pos = torch.where(better, v, self.v), torch.where(better, c0 + j, self.pos)
            return
        g, rows, width = self.GROUP, s.shape[0], s.shape[1]
        if width % g or not s.is_contiguous():  # an edge tile: pad to whole groups (once per row block)
            s = torch.nn.functional.pad(s, (0, -width % g), value=float("-inf"))
        group_max = torch.nn.functional.max_pool1d(s.unsqueeze(1), g, g).squeeze(1)
        grp = group_max.topk(min(self.k, group_max.shape[1]), dim=1, sorted=False).indices.unsqueeze(2)
        vals = s.view(rows, -1, g).gather(1, grp.expand(-1, -1, g))  # (rows, k, g)
        pos = c0 + grp * g + torch.arange(g, device=self.device)  # padded columns hold -inf: never chosen
        self.buffered.append((vals.reshape(rows, -1), pos.reshape(rows, -1)))
        self.width += vals.shape[1] * g
        if self.width >= self.MERGE_WIDTH:
            self._merge()

    def _merge(self) -> None:
        if self.buffered:
            v = torch.cat([self.v] + [b[0] for b in self.buffered], 1)
            p = torch.cat([self.pos] + [b[1] for b in self.buffered], 1)
            self.v, j = v.topk(self.k, dim=1)
            self.pos = p.gather(1, j)
            self.buffered, self.width = [], 0

    def end(self, r0: int, r1: int) -> None:
        self._merge()
        self.values[r0:r1] = self.v
        self.indices[r0:r1] = self.col_order[self.pos.clamp(max=self.col_order.numel() - 1)]


def _count_pass(tiles: _Tiles, best_r: torch.Tensor, best_c: torch.Tensor | None, tie_rule: TieRule,
                top: _RowTopK | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Main pass: per row and per column, how many entries reach the best correct score (``>=`` or ``>``).

    Counts are exact: comparisons are written as 0/1 into an fp32 buffer and summed (every partial sum is an
    integer below 2²⁴, a tile edge at most); the totals accumulate in float64.
    """
    compare = torch.ge if tie_rule is TieRule.PESSIMISTIC else torch.gt
    n, m, t, dev = tiles.n, tiles.m, tiles.layout.tile, best_r.device
    above_r = torch.zeros(n, dtype=torch.float64, device=dev)
    above_c = torch.zeros(m, dtype=torch.float64, device=dev) if best_c is not None else None
    ones = torch.ones(t, device=dev)
    for r0 in range(0, n, t):
        r1 = min(r0 + t, n)
        a, thr = tiles.query_block(r0, t), best_r[r0:r1, None]
        if top is not None:
            top.begin(r1 - r0)
        for c0 in range(0, m, t):
            c1 = min(c0 + t, m)
            s = tiles.tile_scores(r0 // t, c0 // t, a)
            hits = tiles.hits(s.shape)
            above_r[r0:r1] += compare(s, thr, out=hits).sum(1)
            if above_c is not None:  # column sums as a matrix-vector product: faster than sum(0)
                above_c[c0:c1] += torch.mv(compare(s, best_c[None, c0:c1], out=hits).t(), ones[: r1 - r0])
            if top is not None:
                top.update(s, c0)
        if top is not None:
            top.end(r0, r1)
    return above_r, above_c


def _ranks(above: torch.Tensor, count: torch.Tensor, best: torch.Tensor, order: torch.Tensor,
           tie_rule: TieRule) -> torch.Tensor:
    """Back to the caller's order: entries reaching the best correct score minus the correct ones there."""
    sorted_ranks = (above - count if tie_rule is TieRule.PESSIMISTIC else above).to(torch.long)
    sorted_ranks[best == float("-inf")] = -1
    ranks = torch.empty_like(sorted_ranks)
    ranks[order] = sorted_ranks
    return ranks


def _check_inputs(query: torch.Tensor, candidates: torch.Tensor, positives: IdPositives, n: int,
                  m: int) -> None:
    if query.ndim != 2 or candidates.ndim != 2 or query.shape[1] != candidates.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) embeddings, got {tuple(query.shape)} and "
                         f"{tuple(candidates.shape)}")
    if not isinstance(positives, IdPositives):
        raise TypeError(f"positives must be IdPositives (positives_from_ids), got {type(positives).__name__}")
    if (positives.num_queries, positives.num_candidates) != (n, m):
        raise ValueError(f"positives are for {positives.num_queries} queries × {positives.num_candidates} "
                         f"candidates, the embeddings give {n} × {m}")
    for name, emb in (("query", query), ("candidate", candidates)):
        if bool(torch.isfinite(emb.sum())):  # one cheap pass: any NaN/inf entry makes the sum non-finite
            continue
        bad = ~torch.isfinite(emb).all(dim=1)
        if bool(bad.any()):
            raise ValueError(f"{name} embeddings contain NaN or inf (row {int(bad.nonzero()[0])}); a NaN "
                             "score would compare false and rank as a hit")


@torch.no_grad()
def bidirectional_ranks(
    query: torch.Tensor,
    candidates: torch.Tensor,
    positives: IdPositives,
    *,
    query_rows: torch.Tensor | None = None,
    candidate_rows: torch.Tensor | None = None,
    tile_size: int | None = None,
    tie_rule: TieRule | str = TieRule.PESSIMISTIC,
    topk: int = 0,
    columns: bool = True,
    normalize: bool = False,
) -> BidirectionalRanks:
    """Ranks of every query among the candidates (rows) and of every candidate among the queries (columns).

    Args:
        query: ``(Nq, D)`` query embeddings (normalise beforehand for cosine scores).
        candidates: ``(Nc, D)`` candidate embeddings.
        positives: the correct pairs (:func:`positives_from_ids`), indexed by query and candidate position.
        query_rows, candidate_rows: optional ``(N,)``/``(M,)`` rows of ``query``/``candidates`` to score (the
            embeddings are gathered tile by tile, never copied whole); default all rows.
        tile_size: edge of the square score tiles; default 1024 on CPU, 8192 on CUDA. Extra memory is about
            ``tile_size² · 8`` bytes plus ``O((N + M) + tile_size · D)`` (module docstring).
        tie_rule: see the module docstring (for both directions).
        topk: also return the ``topk`` best candidates of every query (for dumps and label agreement).
        columns: also rank the candidates among the queries (the reverse direction) in the same pass.
        normalize: score cosines: every gathered block is divided by its rows' L2 norms (the norms are
            ``O(N + M)``; scores equal those of ``F.normalize``-d embeddings bit for bit, without the
            normalised ``N × D`` copies).
    """
    n = query.shape[0] if query_rows is None else int(query_rows.numel())
    m = candidates.shape[0] if candidate_rows is None else int(candidate_rows.numel())
    _check_inputs(query, candidates, positives, n, m)
    tie_rule = TieRule(tie_rule)
    tile = int(tile_size or (CUDA_TILE if query.is_cuda else CPU_TILE))
    if tile < 1:
        raise ValueError("tile_size must be >= 1")
    cell = min(CUDA_CELL if query.is_cuda else CPU_CELL, tile)
    tile = -(-tile // cell) * cell
    dev, k = query.device, min(int(topk), m)
    if n == 0 or m == 0:
        rows = RankResult(torch.full((n,), -1, dtype=torch.long, device=dev),
                          torch.empty(n, k, dtype=torch.long, device=dev) if k else None,
                          torch.empty(n, k, device=dev) if k else None)
        return BidirectionalRanks(rows, RankResult(torch.full((m,), -1, dtype=torch.long, device=dev))
                                  if columns else None)
    cell, pad = _plan_products(query.device, query.shape[1], n, m, tile, cell)
    layout = _layout(positives, tile, cell)
    tiles = _Tiles(query, candidates, query_rows, candidate_rows, layout, pad, normalize)
    best_r, count_r, best_c, count_c = _best_correct(tiles, positives)
    top = _RowTopK(n, k, layout.col_order) if k else None
    above_r, above_c = _count_pass(tiles, best_r, best_c if columns else None, tie_rule, top)
    rows = RankResult(_ranks(above_r, count_r, best_r, layout.row_order, tie_rule))
    if top is not None:
        rows.topk_indices = torch.empty_like(top.indices)
        rows.topk_scores = torch.empty_like(top.values)
        rows.topk_indices[layout.row_order], rows.topk_scores[layout.row_order] = top.indices, top.values
    cols = RankResult(_ranks(above_c, count_c, best_c, layout.col_order, tie_rule)) if columns else None
    return BidirectionalRanks(rows=rows, cols=cols)


@torch.no_grad()
def retrieval_ranks(
    query: torch.Tensor,
    candidates: torch.Tensor,
    positives_fn: IdPositives | PositivesFn,
    chunk_size: int | None = None,
    tie_rule: TieRule | str = TieRule.PESSIMISTIC,
    topk: int = 0,
) -> RankResult:
    """Rank of the best correct candidate for every query (one direction), by dot-product score.

    Args:
        query: ``(N, D)`` query embeddings (normalise beforehand for cosine scores).
        candidates: ``(M, D)`` candidate embeddings.
        positives_fn: :class:`IdPositives` (tiled pass of :func:`bidirectional_ranks`, rows only), or any
            :data:`PositivesFn` (row chunks, for masks that are not id equalities).
        chunk_size: tile edge for :class:`IdPositives`; query rows per chunk for a :data:`PositivesFn`
            (default 4096; peak extra memory about ``chunk_size · M · 12`` bytes there).
        tie_rule: see the module docstring.
        topk: also return the indices/scores of the ``topk`` best candidates (for dumps, label agreement).
    """
    if isinstance(positives_fn, IdPositives):
        return bidirectional_ranks(query, candidates, positives_fn, tile_size=chunk_size, tie_rule=tie_rule,
                                   topk=topk, columns=False).rows
    return row_chunk_ranks(query, candidates, positives_fn, chunk_size or 4096, tie_rule, topk)


@torch.no_grad()
def row_chunk_ranks(
    query: torch.Tensor,
    candidates: torch.Tensor,
    positives_fn: PositivesFn,
    chunk_size: int = 4096,
    tie_rule: TieRule | str = TieRule.PESSIMISTIC,
    topk: int = 0,
) -> RankResult:
    """One direction in query-row chunks with an arbitrary positive mask (the metric before the tiled pass;
    kept for masks that are not id equalities and as the reference the tiled pass is tested against)."""
    if query.ndim != 2 or candidates.ndim != 2 or query.shape[1] != candidates.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) embeddings, got {tuple(query.shape)} and "
                         f"{tuple(candidates.shape)}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    tie_rule = TieRule(tie_rule)
    n, m = query.shape[0], candidates.shape[0]
    k = min(int(topk), m)
    cand_t = candidates.float().t().contiguous()
    ranks = torch.empty(n, dtype=torch.long, device=query.device)
    top_idx = torch.empty(n, k, dtype=torch.long, device=query.device) if k else None
    top_val = torch.empty(n, k, dtype=torch.float32, device=query.device) if k else None
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        scores = query[start:end].float() @ cand_t  # (c, M) fp32
        pos = positives_fn(start, end)
        if pos.shape != scores.shape:
            raise ValueError(f"positives_fn returned shape {tuple(pos.shape)}, expected "
                             f"{tuple(scores.shape)}")
        best_pos = scores.masked_fill(~pos, float("-inf")).amax(dim=1, keepdim=True)
        beats = scores >= best_pos if tie_rule is TieRule.PESSIMISTIC else scores > best_pos
        chunk_ranks = (beats & ~pos).sum(dim=1)
        chunk_ranks[~pos.any(dim=1)] = -1
        ranks[start:end] = chunk_ranks
        if k:
            val, idx = scores.topk(k, dim=1)
            top_idx[start:end] = idx
            top_val[start:end] = val
        del scores, pos, beats
    return RankResult(ranks=ranks, topk_indices=top_idx, topk_scores=top_val)


@dataclass
class RankSummary:
    """Recall@K and rank statistics of a set of ranks (1-based mean/median ranks)."""

    recall_at_k: dict[int, float]
    mean_rank: float
    median_rank: float
    num_queries: int
    num_without_positive: int


def summarize_ranks(ranks: torch.Tensor, ks: Sequence[int]) -> RankSummary:
    """Hit-rate Recall@K and 1-based mean/median rank over the queries that have a correct candidate.

    Queries without any correct candidate (rank ``-1``) count as misses in Recall@K and are left out of the
    mean/median rank; their number is reported.
    """
    ranks = ranks.detach().to("cpu", torch.float64)
    valid = ranks >= 0
    n = int(ranks.numel())
    recall = {int(k): (float(((ranks >= 0) & (ranks < k)).sum()) / n if n else float("nan")) for k in ks}
    vr = ranks[valid] + 1.0
    mean_rank = float(vr.mean()) if vr.numel() else float("nan")
    median_rank = float(torch.quantile(vr, 0.5)) if vr.numel() else float("nan")
    return RankSummary(recall_at_k=recall, mean_rank=mean_rank, median_rank=median_rank,
                       num_queries=n, num_without_positive=int((~valid).sum()))
