"""Streaming tar shards (wds:): split by shard across ranks and readers, seeded shuffle, exact mid-epoch resume."""

import io
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

from cliplab.train import Trainer
from cliplab.train.streaming import ShardStream, is_stream_spec, resolve_shards
from test_trainer import read_metrics, tiny_config


def write_shards(root, n_shards, per_shard, image_size=32, seed=0):
    """img2dataset-style shards root/{000000..}.tar of jpg + txt (built-in world images and captions)."""
    from cliplab.data import shapes

    ds = shapes("train", n=n_shards * per_shard, image_size=image_size, seed=seed)
    caption = {int(i): c for c, i in zip(reversed(ds.captions), reversed(list(ds.text_to_image)))}
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with tarfile.open(root / f"{s:06d}.tar", "w") as tf:
            for i in range(s * per_shard, (s + 1) * per_shard):
                buf = io.BytesIO()
                ds.image(i).save(buf, format="JPEG", quality=95)
                for ext, data in (("jpg", buf.getvalue()), ("txt", caption[i].encode())):
                    info = tarfile.TarInfo(f"{s:06d}{i:04d}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return f"wds:{root}/{{000000..{n_shards - 1:06d}}}.tar"


def keys(batch):
    return [s["__key__"] for s in batch]


def test_spec_detection_and_missing_shards(tmp_path):
    spec = write_shards(tmp_path / "shards", 2, 3)
    assert is_stream_spec(spec) and is_stream_spec("wds:a.tar::b.tar") and is_stream_spec("wds:hf://o/n/{0..1}.tar")
    assert not is_stream_spec("wds:/data/cifar10") and not is_stream_spec("shapes")
    assert [os.path.basename(p) for p in resolve_shards(spec)] == ["000000.tar", "000001.tar"]
    with pytest.raises(FileNotFoundError, match="000002.tar"):
        resolve_shards(f"wds:{tmp_path}/shards/{{000000..000002}}.tar")
    with pytest.raises(ValueError, match="at least one"):
        ShardStream(resolve_shards(spec), 2, 0, rank=0, world_size=3)


def _epoch_keys(stream, draws):
    state, out = stream.initial_state(), Counter()
    for _ in range(draws):
        batch, _, state = stream.batch(state)
        out.update(s["__key__"] for s in batch if s["__epoch__"] == 0)
    return out


def test_ranks_and_readers_cover_every_sample_once_per_epoch(tmp_path):
    shards = resolve_shards(write_shards(tmp_path / "s", 5, 4))
    every = Counter()
    for rank in range(2):
        stream = ShardStream(shards, 3, seed=1, rank=rank, world_size=2, num_workers=2, buffer_size=5)
        mine = _epoch_keys(stream, 20)
        assert set(stream.rank_shards(0)).isdisjoint(ShardStream(shards, 3, 1, 1 - rank, 2).rank_shards(0))
        every.update(mine)
    assert len(every) == 20 and set(every.values()) == {1}
    # a new epoch permutes the shards (seeded), the same seed gives the same stream
    a, b = ShardStream(shards, 4, seed=3), ShardStream(shards, 4, seed=3)
    sa, sb = a.initial_state(), b.initial_state()
    for _ in range(8):
        (ba, _, sa), (bb, _, sb) = a.batch(sa), b.batch(sb)
        assert keys(ba) == keys(bb)
    assert a.rank_shards(0) != a.rank_shards(1) or a.rank_shards(1) != a.rank_shards(2)


def test_stream_resumes_at_the_next_sample_from_a_saved_state(tmp_path):
    shards = resolve_shards(write_shards(tmp_path / "s", 3, 5))
    straight = ShardStream(shards, 4, seed=0, num_workers=2, buffer_size=6)
    state, batches, saved = straight.initial_state(), [], None
    for step in range(9):  # 36 samples: into the third epoch of 15
        batch, _, state = straight.batch(state)
        batches.append(keys(batch))
        if step == 4:
            saved = json.loads(json.dumps(state.to_dict()))  # mid-epoch, as a checkpoint stores it
    resumed = ShardStream(shards, 4, seed=0, num_workers=2, buffer_size=6)
    state = resumed.state_from_dict(saved)
    for step in range(5, 9):
        batch, _, state = resumed.batch(state)
        assert keys(batch) == batches[step]
    with pytest.raises(ValueError, match="num_workers"):
        ShardStream(shards, 4, seed=0, num_workers=3).state_from_dict(saved)


class Killed(Exception):
    """Stands for the process being killed in the middle of a step."""


def _wds_config(tmp_path, name, spec, **extra):
    return tiny_config(
        tmp_path / name,
        data={"train": spec, "shuffle_buffer": 8, "shard_readers": 2, "num_workers": 2},
        steps=7,
        batch_size=4,
        checkpoint_every=2,
        log_every=1,
        **extra,
    )


NEGATIVES = {"loss": {"name": "clip", "hard_negatives": {"per_caption": 2}}}


@pytest.mark.parametrize("extra", [{}, NEGATIVES], ids=["plain", "hard-negatives"])
def test_wds_training_killed_mid_epoch_resumes_with_the_same_losses(tmp_path, extra):
    spec = write_shards(tmp_path / "shards", 4, 8)  # 32 samples: 8 steps of 4 per epoch
    straight = Trainer(_wds_config(tmp_path, "straight", spec, **extra), progress=False)
    straight.fit()
    assert len(straight.losses) == 7
    if extra:  # the rewritten captions really are in the batches: the losses differ from a plain run's
        plain = Trainer(_wds_config(tmp_path, "plain", spec), progress=False)
        plain.fit()
        assert not np.allclose(plain.losses, straight.losses, atol=1e-3)

    cfg = _wds_config(tmp_path, "killed", spec, **extra)
    first = Trainer(cfg, progress=False)
    step = first.train_step

    def dies_at_step_6(batch):
        if first.step == 5:
            raise Killed
        return step(batch)

    first.train_step = dies_at_step_6
    with pytest.raises(Killed):
        first.fit()
    resumed = Trainer(cfg, progress=False, resume=True)
    summary = resumed.fit()
    assert summary["steps_this_run"] == 3  # from the checkpoint of step 4, in the middle of epoch 0
    assert resumed.losses == pytest.approx(straight.losses[4:], abs=1e-6)
    for (name, a), b in zip(straight.model.module.state_dict().items(), resumed.model.module.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert [r["step"] for r in read_metrics(tmp_path / "killed" / "run") if "loss" in r] == list(range(1, 8))


SPLIT_SCRIPT = """
import json, sys
import torch.distributed as dist
from cliplab.train.setup import init_distributed
from cliplab.train.streaming import ShardStream, resolve_shards
env, _ = init_distributed("cpu")
stream = ShardStream(resolve_shards(sys.argv[1]), 3, seed=2, rank=env.rank, world_size=env.world_size,
                     num_workers=2, buffer_size=4)
state, seen = stream.initial_state(), []
for _ in range(12):
    batch, _, state = stream.batch(state)
    seen += [s["__key__"] for s in batch if s["__epoch__"] == 0]
everyone = [None] * env.world_size
dist.all_gather_object(everyone, {"rank": env.rank, "keys": seen, "shards": stream.rank_shards(0)})
if env.rank == 0:
    json.dump(everyone, open(sys.argv[2], "w"))
dist.destroy_process_group()
"""


def test_torchrun_two_ranks_split_the_shards_and_cover_every_sample_once(tmp_path):
    spec = write_shards(tmp_path / "s", 5, 3)
    script, out = tmp_path / "split.py", tmp_path / "seen.json"
    script.write_text(SPLIT_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run([*cmd, str(script), spec, str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert set(ranks[0]["shards"]).isdisjoint(ranks[1]["shards"]) and len(ranks[0]["shards"]) == 3
    every = Counter(k for r in ranks for k in r["keys"])
    assert len(every) == 15 and set(every.values()) == {1}


def test_hub_shards_download_into_the_cache_once_and_train(tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    from cliplab._io import cache_home

    write_shards(tmp_path / "remote" / "train", 2, 8)
    calls = []

    def fake(repo_id, filename, *, repo_type, local_dir, **kwargs):
        calls.append((repo_id, filename, repo_type))
        target = tmp_path.joinpath(local_dir, filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "remote" / filename, target)
        return str(target)

    monkeypatch.setenv("CLIPLAB_HOME", str(tmp_path / "home"))  # the shared test cache stays untouched
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    spec = "wds:hf://someone/shards/train/{000000..000001}.tar"
    shards = resolve_shards(spec)
    assert calls == [("someone/shards", f"train/00000{i}.tar", "dataset") for i in (0, 1)]
    home = cache_home() / "datasets" / "wds" / "someone--shards" / "train"
    assert shards == [str(home / "000000.tar"), str(home / "000001.tar")]
    assert not [p for p in home.parent.rglob("*") if p.name.startswith(".")]  # no temporary left
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached now: no network needed
    summary = Trainer(_wds_config(tmp_path, "hub", spec), progress=False).fit()
    assert summary["status"] == "completed" and len(calls) == 2
    with pytest.raises(FileNotFoundError, match=r"000002\.tar.*HF_HUB_OFFLINE"):
        resolve_shards("wds:hf://someone/shards/train/{000000..000002}.tar")


def test_hub_shard_download_failure_names_the_shard_and_leaves_nothing(tmp_path, monkeypatch):
    import huggingface_hub

    from cliplab._io import cache_home

    def broken(repo_id, filename, *, repo_type, local_dir, **kwargs):
        partial = tmp_path.joinpath(local_dir, filename)
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"half a tar")
        raise ConnectionError("network unreachable")

    monkeypatch.setenv("CLIPLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    with pytest.raises(FileNotFoundError, match=r"000000\.tar.*someone/unreachable.*network unreachable"):
        resolve_shards("wds:hf://someone/unreachable/{000000..000001}.tar")
    root = cache_home() / "datasets" / "wds" / "someone--unreachable"
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]
