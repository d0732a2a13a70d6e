"""medical tasks under two processes (``--nproc-per-node 2``, gloo): per-case Dice and HD95
and the AUC's scores are gathered from every process, and random patches are drawn per
(seed, epoch, case), so segmentation trains and evaluates as one process, with a validation
case held by one process only."""

from __future__ import annotations

import pytest

TINY = ["epochs=2", "limit_train_batches=2", "batch_size=2", "samples_per_volume=2", "patch_size=[16,16,16]",
        "channels=[8,16]", "sw_batch_size=8", "seed=0"]


@pytest.mark.slow
def test_two_processes_segment_as_one(dlguide_distributed_run):
    # SegResNet normalises by groups (the U-Net's batch norm would see half a batch per process);
    # 6 cases: 4 to train (two global batches of 2), 1 to validate (the second process holds
    # none of it), 1 to test. Losses agree to 1e-5; a voxel whose class flips under float
    # rounding moves Dice by ~1e-4
    dlguide_distributed_run("medical.segment", "model=segresnet", *TINY, "synthetic_cases=6", "synthetic_size=32",
                            "val_fraction=0.2", "test_fraction=0.2", tolerance=1e-3)


@pytest.mark.slow
def test_two_processes_classify_with_every_score_in_the_auc(dlguide_distributed_run):
    # DenseNet's batch norm sees each process's half of a batch (SyncBatchNorm needs CUDA): the
    # figures differ from one process's, the run and its metrics do not
    _, two, _ = dlguide_distributed_run("medical.classify", "epochs=1", "limit_train_batches=1", "batch_size=8",
                                       "image_size=32", "seed=0", "synthetic_per_class=10", exact=False)
    assert 0 <= two["test/auc"] <= 1 and 0 <= two["test/accuracy"] <= 1
