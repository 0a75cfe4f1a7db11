"""webdataset shards (``cliplab.data.shards``) and ``wds:`` specs in CLIP_benchmark's layout.

The fixtures are written here with ``tarfile`` exactly as ``clip_benchmark.webdataset_builder.convert_dataset``
lays them out: ``<root>/<split>/{0..n-1}.tar`` with members ``s%07d.<image ext>`` + ``s%07d.cls``,
``<split>/nshards.txt``, ``classnames.txt`` and ``zeroshot_classification_templates.txt`` (``{c}``).
"""

import io
import json
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from cliplab.data import check_data_spec, load_dataset
from cliplab.data.shards import ShardError, ShardIndex, expand_shards, iter_samples, iter_shards, split_key

CLASSNAMES = ["airplane", "automobile", "bird"]
TEMPLATES = ["a photo of a {c}.", "a blurry photo of a {c}."]


def _add(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    tf.addfile(info, io.BytesIO(data))


def _encode(image, fmt):
    buf = io.BytesIO()
    if fmt == "webp":
        image.save(buf, format="webp", lossless=True)
    else:
        image.save(buf, format={"png": "png", "jpg": "jpeg"}[fmt])
    return buf.getvalue()


def random_image(rng, size=None):
    h, w = size or rng.integers(12, 30, size=2)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def write_wds(
    root,
    *,
    split="test",
    per_shard=(5, 3),
    seed=0,
    formats=("webp", "png"),
    captions=False,
    classnames=CLASSNAMES,
    templates=TEMPLATES,
):
    """A CLIP_benchmark webdataset at ``root``; returns the samples written, in order: (key, image, label|captions)."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    written = []
    index = 0
    for s, count in enumerate(per_shard):
        with tarfile.open(root / split / f"{s}.tar", "w") as tf:
            for _ in range(count):
                key = f"s{index:07d}"
                image = random_image(rng)
                fmt = formats[index % len(formats)]
                _add(tf, f"{key}.{fmt}", _encode(image, fmt))
                if captions:
                    caps = [f"caption {index} number {j}" for j in range(1 + index % 3)]
                    _add(tf, f"{key}.txt", "\n".join(caps).encode())
                    written.append((key, image, caps))
                else:
                    label = int(rng.integers(0, len(classnames or CLASSNAMES)))
                    _add(tf, f"{key}.cls", str(label).encode())
                    written.append((key, image, label))
                index += 1
    (root / split / "nshards.txt").write_text(f"{len(per_shard)}\n")
    if captions:
        (root / "dataset_type.txt").write_text("retrieval\n")
    else:
        if classnames is not None:
            (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
        if templates is not None:
            (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return written


@pytest.fixture
def wds_dir(tmp_path):
    root = tmp_path / "wds_toy"
    return root, write_wds(root)


# -- shards -------------------------------------------------------------------------------------------------


def test_expand_shards_braces_and_lists():
    assert expand_shards("d/{000..002}.tar") == ["d/000.tar", "d/001.tar", "d/002.tar"]
    assert expand_shards("{0..10}.tar")[-2:] == ["9.tar", "10.tar"]
    assert expand_shards("{a,b}-{1..2}.tar::c.tar") == ["a-1.tar", "a-2.tar", "b-1.tar", "b-2.tar", "c.tar"]
    assert expand_shards(["x.tar", "y{0..1}.tar"]) == ["x.tar", "y0.tar", "y1.tar"]
    with pytest.raises(ValueError, match="empty range"):
        expand_shards("{5..1}.tar")


def test_split_key_follows_the_webdataset_convention():
    assert split_key("dir/s0001.seg.PNG") == ("dir/s0001", "seg.png")
    assert split_key("s0001.cls") == ("s0001", "cls")
    assert split_key("a.b/c.jpg") == ("a.b/c", "jpg")


def test_iter_samples_groups_members_in_order(tmp_path):
    path = tmp_path / "0.tar"
    with tarfile.open(path, "w") as tf:
        for k in ("b", "a", "c"):  # tar order, not sorted order
            _add(tf, f"{k}.jpg", k.encode() * 3)
            _add(tf, f"{k}.json", json.dumps({"k": k}).encode())
        _add(tf, "__index__", b"meta")
    samples = list(iter_samples(path))
    assert [s["__key__"] for s in samples] == ["b", "a", "c"]
    assert samples[1]["jpg"] == b"aaa" and json.loads(samples[1]["json"]) == {"k": "a"}
    assert all(s["__shard__"] == str(path) for s in samples)
    assert [set(s) - {"__key__", "__shard__"} for s in iter_samples(path, extensions=["json"])] == [{"json"}] * 3
    assert len(list(iter_shards([path, path]))) == 6


def test_index_reads_what_streaming_reads_and_pickles(tmp_path):
    root = tmp_path / "w"
    write_wds(root, per_shard=(4, 0, 3), formats=("png", "jpg"))
    shards = [str(root / "test" / f"{i}.tar") for i in range(3)]
    streamed = list(iter_shards(shards))
    index = ShardIndex.build(shards)
    assert len(index) == len(streamed) == 7
    assert [r.key for r in index.samples] == [s["__key__"] for s in streamed]
    assert [r.shard for r in index.samples] == [0] * 4 + [2] * 3
    for i in (6, 0, 3):  # random order
        s = streamed[i]
        assert index.read(i) == {k: v for k, v in s.items() if not k.startswith("__")}
    clone = pickle.loads(pickle.dumps(index))
    assert clone.read(5) == index.read(5) and clone.fingerprint() == index.fingerprint()
    assert ShardIndex.from_json(json.loads(json.dumps(index.to_json()))).read(2, ["cls"]) == index.read(2, ["cls"])


def test_malformed_shards_name_the_shard(tmp_path):
    good = tmp_path / "good.tar"
    with tarfile.open(good, "w") as tf:
        for i in range(3):
            _add(tf, f"s{i}.png", b"x" * 700)
            _add(tf, f"s{i}.cls", b"1")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file at all" * 40)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[:2000])
    dup = tmp_path / "dup.tar"
    with tarfile.open(dup, "w") as tf:
        _add(tf, "s0.png", b"1")
        _add(tf, "s0.png", b"2")
    for bad in (garbage, truncated, dup):
        with pytest.raises(ShardError, match=bad.name):
            ShardIndex.build(str(bad))
        with pytest.raises(ShardError, match=bad.name):
            list(iter_samples(bad))
    with pytest.raises(ShardError, match="not found"):
        ShardIndex.build(str(tmp_path / "missing.tar"))


# -- wds: ---------------------------------------------------------------------------------------------------


def test_wds_classification_order_labels_classnames_templates(wds_dir):
    root, written = wds_dir
    ds = load_dataset(f"wds:{root}")
    assert len(ds) == len(written) == 8
    assert ds.keys == [k for k, _, _ in written]
    assert ds.labels.tolist() == [lab for _, _, lab in written]
    assert ds.classnames == CLASSNAMES and ds.templates == TEMPLATES
    for i, (_, image, _) in enumerate(written):  # webp and png written losslessly: pixels must match
        assert np.array_equal(np.asarray(ds.image(i)), np.asarray(image))
    item = ds[3]
    assert item["index"] == 3 and item["label"] == written[3][2] and item["image"].size == written[3][1].size
    assert ds.captions is None


def test_wds_reads_only_the_shards_nshards_names_and_splits(tmp_path):
    root = tmp_path / "w"
    written = write_wds(root, per_shard=(2, 2))
    shutil.copy(root / "test" / "0.tar", root / "test" / "2.tar")  # not listed by nshards.txt: ignored
    train = write_wds(root, split="train", per_shard=(3,), seed=1)
    assert len(load_dataset(f"wds:{root}")) == len(written) == 4
    ds = load_dataset(f"wds:{root}:split=train")
    assert ds.labels.tolist() == [lab for _, _, lab in train]
    assert len(load_dataset(f"wds:{root}", split="train")) == 3  # the caller's default split
    with pytest.raises(FileNotFoundError, match="val.nshards.txt"):
        load_dataset(f"wds:{root}:split=val")


def test_wds_fingerprint_cheap_stable_and_content_sensitive(wds_dir, tmp_path):
    root, written = wds_dir
    a = load_dataset(f"wds:{root}").fingerprint()
    assert load_dataset(f"wds:{root}").fingerprint() == a
    copy = tmp_path / "elsewhere"
    shutil.copytree(root, copy)
    # a copy has new change times (st_ctime_ns), so its features are computed again (see docs/datasets.md)
    assert load_dataset(f"wds:{copy}").fingerprint() != a
    a = load_dataset(f"wds:{copy}").fingerprint()
    (copy / "classnames.txt").write_text("a\nb\nc\n")
    assert load_dataset(f"wds:{copy}").fingerprint() != a
    other = tmp_path / "other"
    write_wds(other, seed=5)
    assert load_dataset(f"wds:{other}").fingerprint() != a


def test_wds_retrieval_captions(tmp_path):
    root = tmp_path / "ret"
    written = write_wds(root, per_shard=(3, 2), captions=True)
    ds = load_dataset(f"wds:{root}")
    expected = [c for _, _, caps in written for c in caps]
    assert ds.captions == expected
    assert ds.text_to_image.tolist() == [i for i, (_, _, caps) in enumerate(written) for _ in caps]
    assert ds.labels is None and ds.classnames is None
    assert ds[4]["captions"] == written[4][2]


def test_wds_in_the_loader_with_workers_keeps_order(wds_dir):
    from cliplab.data import make_loader
    from cliplab.imaging.preprocess import Preprocess

    root, written = wds_dir
    ds = load_dataset(f"wds:{root}")
    pre = Preprocess(resize=(8, 8), crop=None)
    serial = list(make_loader(ds, pre, batch_size=3))
    parallel = list(make_loader(ds, pre, batch_size=3, num_workers=2))
    assert [b["index"].tolist() for b in parallel] == [b["index"].tolist() for b in serial]
    for a, b in zip(serial, parallel):
        assert np.allclose(a["pixel_values"].numpy(), b["pixel_values"].numpy())
        assert a["label"].tolist() == b["label"].tolist()


def test_wds_bad_inputs_name_the_file(tmp_path):
    root = tmp_path / "w"
    write_wds(root, classnames=None)
    for call in (lambda: load_dataset(f"wds:{root}"), lambda: check_data_spec(f"wds:{root}")):
        with pytest.raises(FileNotFoundError, match=r"classnames\.txt"):
            call()
    (root / "classnames.txt").write_text("only one\n")
    with pytest.raises(ValueError, match="lists 1 classes"):
        load_dataset(f"wds:{root}")
    (root / "classnames.txt").write_text("\n".join(CLASSNAMES))
    from cliplab._io import cache_home

    before = sorted((cache_home() / "wds-index").iterdir())
    (root / "test" / "1.tar").write_bytes(b"\0garbage" * 300)
    with pytest.raises(ValueError, match=r"1\.tar"):
        load_dataset(f"wds:{root}")
    assert sorted((cache_home() / "wds-index").iterdir()) == before  # no index of a bad shard, no temporary file
    (root / "test" / "nshards.txt").write_text("zero")
    with pytest.raises(ValueError, match="nshards.txt"):
        load_dataset(f"wds:{root}")
    with pytest.raises(FileNotFoundError, match="neither a directory"):
        load_dataset(f"wds:{tmp_path / 'nothing' / 'here' / 'x'}")


def test_wds_hub_id_without_a_network_is_a_clear_error(monkeypatch):
    from cliplab._io import cache_home

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for call in (
        lambda: load_dataset("wds:clip-benchmark/wds_cifar10"),
        lambda: check_data_spec("wds:clip-benchmark/wds_cifar10"),
    ):
        with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE") as err:
            call()
        assert "clip-benchmark/wds_cifar10" in str(err.value)
    cache = cache_home() / "datasets" / "wds"
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written


def test_wds_hub_download_failure_leaves_nothing(monkeypatch):
    import huggingface_hub

    from cliplab._io import cache_home

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def broken(repo_id, *, local_dir, **kwargs):
        (local_dir_path := __import__("pathlib").Path(local_dir) / "test").mkdir(parents=True)
        (local_dir_path / "0.tar").write_bytes(b"partial")
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", broken)
    with pytest.raises(FileNotFoundError, match="could not download.*network unreachable"):
        load_dataset("wds:someone/wds_thing")
    cache = cache_home() / "datasets" / "wds"
    assert not any(cache.iterdir())


def test_wds_hub_download_goes_into_the_cache(monkeypatch, tmp_path):
    import huggingface_hub

    from cliplab._io import cache_home

    source = tmp_path / "remote"
    written = write_wds(source)
    calls = []

    def fake(repo_id, *, repo_type, allow_patterns, local_dir, **kwargs):
        calls.append((repo_id, repo_type, allow_patterns))
        shutil.copytree(source, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    ds = load_dataset("wds:clip-benchmark/wds_toy")
    assert calls == [("clip-benchmark/wds_toy", "dataset", ["test/*", "*.txt"])]
    assert ds.labels.tolist() == [lab for _, _, lab in written]
    assert (cache_home() / "datasets" / "wds" / "clip-benchmark--wds_toy" / "test" / "nshards.txt").is_file()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached now: no network needed
    assert load_dataset("wds:clip-benchmark/wds_toy").fingerprint() == ds.fingerprint()
    assert len(calls) == 1
    assert not [p for p in (cache_home() / "datasets" / "wds").iterdir() if p.name.startswith(".")]
    mode = os.stat(cache_home() / "datasets" / "wds" / "clip-benchmark--wds_toy" / "test").st_mode & 0o777
    assert mode & 0o755 == 0o755


# -- the CLI on a wds: fixture, against CLIP_benchmark's definitions computed here --------------------------

VOCAB_CLASSES = ["red circle", "blue square", "green star", "red thing", "blue circle", "green square"]


def _decoded_from_tars(root, split="test"):
    """Images and labels read straight from the tars (tarfile + PIL), in CLIP_benchmark's order."""
    n = int((root / split / "nshards.txt").read_text())
    images, labels = [], []
    for s in range(n):
        with tarfile.open(root / split / f"{s}.tar") as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        for key in sorted({name.split(".")[0] for name in members}):
            ext = next(e for e in ("webp", "png", "jpg", "jpeg") if f"{key}.{e}" in members)
            images.append(Image.open(io.BytesIO(members[f"{key}.{ext}"])).convert("RGB"))
            labels.append(int(members[f"{key}.cls"]))
    return images, np.asarray(labels)


def test_zeroshot_and_embed_cli_on_wds_match_clip_benchmark(tmp_path, tiny_model_dir, capsys):
    import torch

    from cliplab import Features
    from cliplab.cli.commands import main
    from cliplab.models import load_model

    root = tmp_path / "wds_vocab"
    write_wds(root, per_shard=(7, 5), classnames=VOCAB_CLASSES, templates=["a photo of a {c}.", "a small {c}."])
    spec = f"wds:{root}"
    assert main(["zeroshot", str(tiny_model_dir), spec, "--json", "--quiet", "--no-cache"]) == 0
    report = json.loads(capsys.readouterr().out)
    out = tmp_path / "f.safetensors"
    assert main(["embed", str(tiny_model_dir), spec, "-o", str(out), "--json", "--quiet", "--no-cache"]) == 0
    capsys.readouterr()

    model = load_model(str(tiny_model_dir))
    images, y = _decoded_from_tars(root)
    with torch.no_grad():
        f = model.encode_images(images).numpy()
        w = []
        for c in VOCAB_CLASSES:
            t = model.encode_texts([f"a photo of a {c}.", f"a small {c}."]).numpy()
            t = t / np.linalg.norm(t, axis=1, keepdims=True)
            m = t.mean(0)
            w.append(m / np.linalg.norm(m))
    logits = f @ np.stack(w).T
    top = np.argsort(-logits, axis=1)
    acc1 = float(np.mean(top[:, 0] == y))
    acc5 = float(np.mean([y[i] in top[i, :5] for i in range(len(y))]))
    recall = float(np.mean([np.mean(top[y == c, 0] == c) for c in np.unique(y)]))  # balanced accuracy
    assert report["n"] == 12
    assert report["acc1"] == pytest.approx(acc1, abs=1e-6)
    assert report["acc5"] == pytest.approx(acc5, abs=1e-6)
    assert report["mean_per_class_recall"] == pytest.approx(recall, abs=1e-6)
    feats = Features.load(out)
    assert feats.labels.tolist() == y.tolist()
    assert np.allclose(feats.images.numpy(), f, atol=1e-5)


def test_retrieve_cli_on_a_wds_retrieval_set_matches_clip_benchmark(tmp_path, tiny_model_dir, capsys):
    import torch

    from cliplab.cli.commands import main
    from cliplab.models import load_model

    root = tmp_path / "wds_ret"
    (root / "test").mkdir(parents=True)
    rng = np.random.default_rng(3)
    words = [("red", "circle"), ("blue", "square"), ("green", "star"), ("red", "thing"), ("blue", "star")]
    caps = [
        [f"a {size} {c} {s} on the {side}" for size, side in (("small", "left"), ("large", "right"))][: 1 + i % 2]
        for i, (c, s) in enumerate(words)
    ]
    with tarfile.open(root / "test" / "0.tar", "w") as tf:
        for i, c in enumerate(caps):
            _add(tf, f"s{i:07d}.png", _encode(random_image(rng), "png"))
            _add(tf, f"s{i:07d}.txt", "\n".join(c).encode())
    (root / "test" / "nshards.txt").write_text("1\n")
    (root / "dataset_type.txt").write_text("retrieval\n")
    argv = ["retrieve", str(tiny_model_dir), f"wds:{root}", "--ks", "1,2", "--json", "--quiet", "--no-cache"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    flat = [c for cs in caps for c in cs]
    t2i = np.asarray([i for i, cs in enumerate(caps) for _ in cs])
    model = load_model(str(tiny_model_dir))
    with tarfile.open(root / "test" / "0.tar") as tf:
        images = [
            Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB") for m in tf if m.name.endswith(".png")
        ]
    with torch.no_grad():
        sim = model.encode_images(images).numpy() @ model.encode_texts(flat).numpy().T
    assert out["n_images"] == 5 and out["n_captions"] == len(flat)
    for k in (1, 2):
        t2i_recall = np.mean([t2i[m] in np.argsort(-sim[:, m])[:k] for m in range(len(flat))])
        i2t_recall = np.mean([bool(set(np.argsort(-sim[n])[:k]) & set(np.nonzero(t2i == n)[0])) for n in range(5)])
        assert out[f"image_retrieval_recall@{k}"] == pytest.approx(t2i_recall, abs=1e-6)
        assert out[f"text_retrieval_recall@{k}"] == pytest.approx(i2t_recall, abs=1e-6)


def test_a_bare_directory_in_the_layout_is_detected(wds_dir):
    from cliplab.data.sources.wds import WebDatasetDir

    root, written = wds_dir
    ds = load_dataset(str(root))
    assert isinstance(ds, WebDatasetDir) and ds.labels.tolist() == [lab for _, _, lab in written]
    check_data_spec(str(root))


def test_shards_named_by_a_pattern(tmp_path, wds_dir):
    root, written = wds_dir
    ds = load_dataset(f"wds:{root}/test/{{0..1}}.tar")  # CLIP_benchmark shards: class names found one folder up
    assert ds.labels.tolist() == [lab for _, _, lab in written] and ds.classnames == CLASSNAMES
    assert len(load_dataset(f"wds:{root}/test/1.tar")) == 3
    pairs = tmp_path / "img2dataset"  # img2dataset's layout: {00000..}.tar of jpg + txt + json
    pairs.mkdir()
    rng = np.random.default_rng(9)
    for s in range(2):
        with tarfile.open(pairs / f"{s:05d}.tar", "w") as tf:
            for i in range(3):
                key = f"{s:05d}{i:04d}"
                _add(tf, f"{key}.jpg", _encode(random_image(rng), "jpg"))
                _add(tf, f"{key}.txt", f"caption {s} {i}".encode())
                _add(tf, f"{key}.json", json.dumps({"key": key}).encode())
    ds = load_dataset(f"wds:{pairs}/{{00000..00001}}.tar")
    assert ds.captions == [f"caption {s} {i}" for s in range(2) for i in range(3)] and ds.labels is None
    assert ds.text_to_image.tolist() == list(range(6)) and ds.image(5).mode == "RGB"
    check_data_spec(f"wds:{pairs}/{{00000..00001}}.tar")
    with pytest.raises(FileNotFoundError, match=r"1 of 3 shards not found, e.g. .*00002\.tar"):
        check_data_spec(f"wds:{pairs}/{{00000..00002}}.tar")
    with pytest.raises(ValueError, match="streamed by the trainer only"):
        load_dataset("wds:hf://someone/shards/{000..009}.tar")


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_header_scan_equals_tarfile(tmp_path, fmt):
    from cliplab.data.shards import _scan_headers, _tarfile_members

    path = tmp_path / "x.tar"
    (tmp_path / "f.txt").write_text("hello")
    with tarfile.open(path, "w", format=fmt) as tf:
        tf.add(tmp_path / "f.txt", arcname="dir/f.txt")
        info = tarfile.TarInfo("dir")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
        link = tarfile.TarInfo("dir/link.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "f.txt"
        tf.addfile(link)
        for i, n in enumerate((0, 1, 511, 512, 513, 5000)):
            _add(tf, f"{'p' * 60}/{'q' * 60}/s{i}.bin", bytes([i]) * n)  # 100+ chars: USTAR prefix field
    size = path.stat().st_size
    expected = _tarfile_members(str(path), size)
    assert len(expected) == 7
    try:
        assert _scan_headers(str(path), size) == expected
    except Exception as err:  # GNU/PAX long-name headers are left to tarfile: the index must still be the same
        assert type(err).__name__ == "_NeedsTarfile" and fmt != tarfile.USTAR_FORMAT
    short = tmp_path / "short.tar"  # short names (webdataset's s0000000.webp) are plain headers in every format
    with tarfile.open(short, "w", format=fmt) as tf:
        for i in range(3):
            _add(tf, f"s{i:07d}.webp", b"x" * (300 * i))
    assert _scan_headers(str(short), short.stat().st_size) == _tarfile_members(str(short), short.stat().st_size)
    assert [m for r in ShardIndex.build(str(path)).samples for m in r.members.values()] == [v for _, v in expected]
    if fmt == tarfile.USTAR_FORMAT:
        return  # USTAR cannot store a long name without a '/'
    long = tmp_path / "long.tar"
    with tarfile.open(long, "w", format=fmt) as tf:
        _add(tf, "x" * 120 + ".bin", b"data")  # no '/' to split on: GNU longname or PAX header
    assert ShardIndex.build(str(long)).read(0) == {"bin": b"data"}
