"""Length-bucketed training batches for the online (LoRA) text path.

With LoRA the text encoder runs forward and backward every step on a batch padded to its longest report; a random
batch of radiology reports (tens to hundreds of tokens) is then mostly padding. :class:`LengthBucketedSampler`
reorders the draws of the seeded training sampler so that each *global* batch holds reports of similar length:

* the draws (dataset index + per-draw seed: view, augmentation, text shuffle) are the base sampler's own, so
  every image stays paired with its report and the epoch's sample multiset is unchanged;
* draws are taken in windows of ``window_batches`` global batches, sorted by text length inside the window and
  cut into global batches; the full batches of a window are shuffled (seeded), so the training order stays
  random at the scale of a window and lengths do not drift over the epoch;
* a global batch is ``batch_size × world_size`` consecutive draws; under DDP
  :class:`~cxr.data.sampling.RankShard` deals them out round-robin, so each rank's local batch comes from one
  length bucket (Lightning's own distributed wrapper would re-shuffle the draws and undo the bucketing).

Contrastive batches of similar-length reports are not otherwise special (length says little about the finding),
but very short and very long reports stop meeting as negatives inside a window; ``window_batches`` bounds that.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from torch.utils.data import Sampler

from cxr.data.sampling import SampleKey, SeededSampler


@dataclass(frozen=True)
class LengthBucketing:
    """Settings of length-bucketed training batches (``CXRDataModule(length_bucketing=...)``).

    Attributes:
        window_batches: global batches per sorting window (larger: less padding, less randomness).
        tokenizer: a Hugging Face tokenizer folder whose token counts define length (the text encoder's);
            None uses characters, which track tokens closely for report text and need no tokenizer.
    """

    window_batches: int = 64
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.window_batches < 1:
            raise ValueError(f"window_batches must be >= 1, got {self.window_batches}")

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Length of each text: tokens of ``tokenizer`` (without special tokens), else characters."""
        if self.tokenizer is None:
            return [len(t) for t in texts]
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.tokenizer)
        out: list[int] = []
        for start in range(0, len(texts), 4096):  # batched: fast tokenizers parallelise inside a call
            ids = tok(list(texts[start:start + 4096]), add_special_tokens=False)["input_ids"]
            out.extend(len(i) for i in ids)
        return out


class LengthBucketedSampler(Sampler[SampleKey]):
    """The draws of ``base`` reordered into similar-length global batches (see the module doc).

    Args:
        base: the seeded training sampler whose draws are reordered.
        length_of: dataset index -> text length.
        global_batch: ``batch_size × world_size``.
        window_batches: global batches per sorting window.
        seed: seed of the batch shuffle inside each window (combined with the epoch).
    """

    def __init__(self, base: SeededSampler, length_of: Callable[[int], int] | Sequence[int], global_batch: int,
                 window_batches: int = 64, seed: int = 0) -> None:
        if global_batch < 1 or window_batches < 1:
            raise ValueError(f"invalid global_batch={global_batch} or window_batches={window_batches}")
        self.base = base
        self.length_of = length_of if callable(length_of) else length_of.__getitem__
        self.global_batch = global_batch
        self.window_batches = window_batches
        self.seed = seed
        self._offset = 0

    @property
    def epoch(self) -> int:
        """The epoch of the next pass (the base sampler's)."""
        return self.base.epoch

    def start_at(self, epoch: int, offset: int) -> None:
        """Make the next pass epoch ``epoch`` minus its first ``offset`` reordered draws (mid-epoch resume)."""
        self.base.start_at(epoch, 0)  # the whole pass is drawn and reordered; the skip happens after
        self._offset = int(offset)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[SampleKey]:
        skip, self._offset = self._offset, 0
        yield from itertools.islice(self._reordered(), skip, None)

    def _reordered(self) -> Iterator[SampleKey]:
        """The whole pass of the base sampler, reordered into similar-length global batches."""
        epoch = self.base.epoch  # read before the base advances it
        rng = random.Random(self.seed * 1_000_003 + epoch)
        draws = list(self.base)
        size = self.global_batch * self.window_batches
        for start in range(0, len(draws), size):
            window = sorted(draws[start:start + size], key=lambda key: self.length_of(key.index))
            batches = [window[i:i + self.global_batch] for i in range(0, len(window), self.global_batch)]
            full = [b for b in batches if len(b) == self.global_batch]
            rng.shuffle(full)
            # a short last batch stays last: in the middle it would shift every later batch boundary
            for batch in full + [b for b in batches if len(b) < self.global_batch]:
                yield from batch


def padding_fraction(batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions over ``batches`` of lengths, each padded to its longest member."""
    padded = sum(len(b) * max(b) for b in batches if b)
    return 1.0 - sum(sum(b) for b in batches) / padded if padded else 0.0
