"""cliplab index: a folder of images → a saved VectorIndex; resume, incremental add, torchrun shards, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cliplab.cli.commands import main
from cliplab.data.folders import ImageFiles, scan_images
from cliplab.index import VectorIndex
from cliplab.index.collection import index_images
from cliplab.models import load_model
from helpers import make_tiny_model, write_random_images


@pytest.fixture
def collection(tmp_path):
    root = tmp_path / "photos"
    names = [f"a/{i:02d}.png" for i in range(7)] + [f"b/c/{i:02d}.jpg" for i in range(4)] + ["top.bmp"]
    write_random_images(root, names)
    (root / "broken.png").write_bytes(b"this is not a png")  # unreadable: skipped, reported
    (root / "notes.txt").write_text("not an image")  # wrong extension: ignored
    write_random_images(root, [".hidden/x.png", ".dot.png"])  # hidden: ignored
    write_random_images(tmp_path, ["outside.png"])
    os.symlink(tmp_path / "outside.png", root / "link.png")  # resolves outside the root: ignored
    return root, sorted(names)


def _vectors(index):
    return index._backend.reconstruct_all()


def _expected(model, root, paths):
    feats = model.encode_images([root / p for p in paths])
    return torch.nn.functional.normalize(feats, dim=-1).numpy()


def test_scan_images_skips_hidden_foreign_and_outside_files(collection):
    root, names = collection
    assert [f.path for f in scan_images(root)] == sorted(names + ["broken.png"])
    # an unlabelled dataset follows links (datasets are often assembled from symlinks); hidden files stay out
    linked = sorted(names + ["broken.png", "link.png"])
    assert [f.path for f in scan_images(root, within_root=False)] == linked
    assert ImageFiles(root).paths == [root / p for p in linked]
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        scan_images(root / "nope")


def test_index_holds_each_readable_image_with_its_path(collection, tiny_model, tmp_path):
    root, names = collection
    summary = index_images(tiny_model, root, tmp_path / "idx", model_spec="tiny", chunk_size=5, progress=False)
    assert (summary.total, summary.added, summary.found) == (len(names), len(names), len(names) + 1)
    assert [s["path"] for s in summary.skipped] == ["broken.png"]
    assert "cannot read image file" in summary.skipped[0]["error"]
    index = VectorIndex.load(tmp_path / "idx")
    meta = index.get_metadata(range(len(index)))
    assert [m["path"] for m in meta] == names  # file order, across chunks
    assert meta[0]["size"] == (root / names[0]).stat().st_size
    np.testing.assert_allclose(_vectors(index), _expected(tiny_model, root, names), atol=1e-5)
    assert index.model == "tiny" and index.info["root"] == str(root.resolve())
    assert index.info["model_fingerprint"] == tiny_model.fingerprint() and index.info["skipped_count"] == 1
    assert not (tmp_path / ".idx.partial").exists()  # the work folder is removed once the index is saved
    # exact index: search == brute force over independently computed features
    q = torch.nn.functional.normalize(tiny_model.encode_texts(["a red circle"]), dim=-1).numpy()
    scores, ids = index.search(q, k=5)
    truth = np.argsort(-(q @ _expected(tiny_model, root, names).T)[0], kind="stable")[:5]
    assert ids[0].tolist() == truth.tolist()


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes_from_finished_chunks(collection, tiny_model, tmp_path, monkeypatch):
    import cliplab.index.collection as coll

    root, names = collection
    real = coll._embed_chunk
    calls = []

    def dies_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(coll, "_embed_chunk", dies_on_third_chunk)
    with pytest.raises(Interrupted):
        index_images(tiny_model, root, tmp_path / "idx", chunk_size=4, progress=False)
    assert not (tmp_path / "idx").exists()  # nothing half-written where the index goes
    assert len(list((tmp_path / ".idx.partial").glob("chunk-*.safetensors"))) == 2
    monkeypatch.setattr(coll, "_embed_chunk", real)
    summary = index_images(tiny_model, root, tmp_path / "idx", chunk_size=4, progress=False)
    assert summary.resumed_chunks == 2 and summary.embedded_here == len(names) + 1 - 8
    index = VectorIndex.load(tmp_path / "idx")
    assert [m["path"] for m in index.get_metadata(range(len(index)))] == names
    np.testing.assert_allclose(_vectors(index), _expected(tiny_model, root, names), atol=1e-5)


def test_a_different_job_does_not_reuse_stale_chunks(collection, tiny_model, tmp_path):
    root, names = collection
    work = tmp_path / ".idx.partial"
    work.mkdir()
    (work / "job.json").write_text(json.dumps({"key": "another job"}))
    (work / "chunk-000000.safetensors").write_bytes(b"garbage")
    summary = index_images(tiny_model, root, tmp_path / "idx", chunk_size=4, progress=False)
    assert summary.resumed_chunks == 0
    index = VectorIndex.load(tmp_path / "idx")
    np.testing.assert_allclose(_vectors(index), _expected(tiny_model, root, names), atol=1e-5)


def test_incremental_add_keeps_ids_and_reports_changes(collection, tiny_model, tmp_path):
    root, names = collection
    index_images(tiny_model, root, tmp_path / "idx", progress=False)
    before = _vectors(VectorIndex.load(tmp_path / "idx"))
    write_random_images(root, ["a/new1.png", "z/new2.png"], seed=5)
    (root / names[0]).unlink()
    os.utime(root / names[1], ns=(1, 1))
    summary = index_images(tiny_model, root, tmp_path / "idx", progress=False)
    assert summary.added == 2 and summary.total == len(names) + 2
    assert summary.missing == [names[0]] and summary.changed == [names[1]]
    index = VectorIndex.load(tmp_path / "idx")
    np.testing.assert_allclose(_vectors(index)[: len(names)], before, atol=1e-6)  # old ids untouched
    assert [m["path"] for m in index.get_metadata([len(names), len(names) + 1])] == ["a/new1.png", "z/new2.png"]
    np.testing.assert_allclose(
        _vectors(index)[len(names) :], _expected(tiny_model, root, ["a/new1.png", "z/new2.png"]), atol=1e-5
    )
    again = index_images(tiny_model, root, tmp_path / "idx", progress=False)
    assert again.added == 0 and again.total == len(names) + 2
    rebuilt = index_images(tiny_model, root, tmp_path / "idx", rebuild=True, progress=False)
    assert rebuilt.total == len(names) + 1 and rebuilt.missing == []


def test_refuses_mismatched_model_root_and_foreign_output(collection, tiny_model, tmp_path):
    root, _ = collection
    index_images(tiny_model, root, tmp_path / "idx", progress=False)
    with pytest.raises(ValueError, match="another model"):
        index_images(make_tiny_model(seed=1), root, tmp_path / "idx", progress=False)
    other = tmp_path / "other"
    write_random_images(other, ["x.png"])
    with pytest.raises(ValueError, match="was built from"):
        index_images(tiny_model, other, tmp_path / "idx", progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a cliplab index"):
        index_images(tiny_model, root, tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no image files"):
        index_images(tiny_model, tmp_path / "empty", tmp_path / "idx2", progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="none of the 1 image files"):
        index_images(tiny_model, tmp_path / "bad", tmp_path / "idx3", progress=False)


def test_cli_index_json_and_errors(collection, tiny_model_dir, tmp_path, capsys):
    root, names = collection
    out = tmp_path / "idx"
    assert main(["index", str(tiny_model_dir), str(root), "-o", str(out), "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == len(names) and summary["kind"] == "flat"
    index = VectorIndex.load(out)
    assert index.model == str(tiny_model_dir.resolve())  # an absolute spec: serve works from anywhere
    assert main(["index", str(tiny_model_dir), str(tmp_path / "missing"), "-o", str(out), "-q"]) == 2
    assert "image folder not found" in capsys.readouterr().err
    assert main(["index", "nonsense:model", str(root), "-o", str(out), "-q"]) == 2
    assert "nonsense:model" in capsys.readouterr().err


def test_torchrun_two_ranks_build_the_same_index(collection, tiny_model_dir, tmp_path):
    root, names = collection
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "cliplab", "index", str(tiny_model_dir), str(root), "-o", str(tmp_path / "two")]
    cmd += ["--chunk-size", "3", "--json", "-q"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])  # rank 0 prints, rank 1 does not
    assert summary["world_size"] == 2 and summary["total"] == len(names)
    assert 0 < summary["embedded_here"] < len(names) + 1  # rank 0 embedded only its shard
    two = VectorIndex.load(tmp_path / "two")
    model = load_model(tiny_model_dir)
    assert [m["path"] for m in two.get_metadata(range(len(two)))] == names
    np.testing.assert_allclose(_vectors(two), _expected(model, root, names), atol=1e-5)


def test_torchrun_rank_0_failure_reaches_every_rank(tiny_model_dir, tmp_path):
    """If rank 0 cannot build the index, the other ranks fail with its reason instead of waiting forever."""
    root = tmp_path / "broken"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.png").write_bytes(b"not a png")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "cliplab", "index", str(tiny_model_dir), str(root), "-o", str(tmp_path / "idx"), "--chunk-size", "1"]
    proc = subprocess.run([*cmd, "-q"], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "none of the 4 image files" in proc.stderr  # rank 0's own error
    assert "cliplab: error: rank 0 could not build the index: none of the 4" in proc.stderr  # rank 1, told by rank 0
    assert not (tmp_path / "idx").exists()


def test_a_rewrite_with_its_mtime_set_back_is_reported_changed(collection, tiny_model, tmp_path):
    root, names = collection
    index_images(tiny_model, root, tmp_path / "idx", progress=False)
    target = root / names[2]
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # `touch -r`: size and mtime as indexed
    summary = index_images(tiny_model, root, tmp_path / "idx", progress=False)
    assert summary.changed == [names[2]]
