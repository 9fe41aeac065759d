"""Write ``predict`` embeddings for the notebooks: ``embeddings.safetensors`` + ``meta.csv`` (no text by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from cxr.labels import CHEXPERT_OBSERVATIONS


class EmbeddingWriter(BasePredictionWriter):
    """Collect :class:`~cxr.models.clip_module.EmbeddingBatch` predictions and write them at epoch end.

    Args:
        output_dir: folder for ``embeddings.safetensors`` (image_emb, text_emb, study_ids) and ``meta.csv``
            (study key, source, sample index, 14 CheXpert labels); one file pair per rank under DDP.
        include_text: also write the report texts to ``meta.csv`` (off: medical text stays out by default).
    """

    def __init__(self, output_dir: str, include_text: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.include_text = include_text

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        import pandas as pd
        from safetensors.torch import save_file

        batches = [b for group in (predictions if predictions and isinstance(predictions[0], list)
                                   else [predictions]) for b in group]
        if not batches:
            return
        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        suffix = "" if trainer.world_size == 1 else f".rank{trainer.global_rank}"
        tensors = {"image_emb": torch.cat([b.image_emb for b in batches]).contiguous(),
                   "text_emb": torch.cat([b.text_emb for b in batches]).contiguous(),
                   "study_ids": torch.cat([b.study_ids for b in batches]).contiguous(),
                   "sample_index": torch.cat([b.sample_index for b in batches]).contiguous()}
        save_file(tensors, str(out / f"embeddings{suffix}.safetensors"))
        labels = torch.cat([b.labels for b in batches]).numpy().astype(np.int8)
        meta = pd.DataFrame({"study_key": [k for b in batches for k in b.study_keys],
                             "source": [s for b in batches for s in b.sources],
                             "sample_index": tensors["sample_index"].numpy()})
        for j, name in enumerate(CHEXPERT_OBSERVATIONS):
            meta[name] = labels[:, j]
        if self.include_text:
            meta["text"] = [t for b in batches for t in b.texts]
        meta.to_csv(out / f"meta{suffix}.csv", index=False)
