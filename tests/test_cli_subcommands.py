"""train.py's other subcommands on a trained checkpoint: validate and test report retrieval metrics."""

from __future__ import annotations

import pytest
import torch
from _tiny_clip_run import train_tiny_clip

SUBCOMMAND_METRIC = {"validate": "val/i2t_R@5", "test": "test/i2t_R@5"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, request):
    world = request.getfixturevalue("synthetic_dataset")("csv", num_studies=40, seed=4, image_size=32)
    return train_tiny_clip(tmp_path_factory.mktemp("subcommands"), world / "manifest.csv", max_steps=2)


@pytest.mark.parametrize("subcommand", sorted(SUBCOMMAND_METRIC))
def test_validate_and_test_from_checkpoint(tiny_run, subcommand):
    from cxr.cli import cli_main

    cli = cli_main([subcommand, "--config", str(tiny_run.train_config), "--ckpt_path", str(tiny_run.checkpoint),
                    "--trainer.limit_val_batches=1.0"])
    metrics = cli.trainer.callback_metrics
    key = SUBCOMMAND_METRIC[subcommand]
    assert key in metrics, sorted(metrics)
    assert 0.0 <= float(metrics[key]) <= 1.0
    # the metric comes from the checkpoint's weights, not from the freshly initialised model
    saved = torch.load(tiny_run.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    live = cli.model.state_dict()
    assert saved and all(torch.equal(live[k], v) for k, v in saved.items())
