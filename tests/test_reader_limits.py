"""Every dataset reader goes through ``decode_image``: pixel bombs refused from the header, errors name the image."""

import io
import struct
import tarfile
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from cliplab.data import load_dataset, make_loader
from cliplab.imaging.decoding import ImageTooLarge

BOMB_SIDE = 12000


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A few-byte PNG whose header declares ``side`` × ``side`` pixels (IHDR patched, CRC fixed)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="png")
    data = bytearray(buf.getvalue())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", side, side)
    data[start + 17 : start + 21] = struct.pack(">I", zlib.crc32(bytes(data[start : start + 17])))
    return bytes(data)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buf, "png")
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_bomb_is_small_and_declares_144_megapixels():
    data = bomb_png()
    assert len(data) < 100
    assert Image.open(io.BytesIO(data)).size == (BOMB_SIDE, BOMB_SIDE)


def _skipped(dataset, preprocess) -> list[dict]:
    loader = make_loader(dataset, preprocess, batch_size=4, num_workers=0, on_error="skip")
    for _ in loader:
        pass
    return loader.skipped


def test_a_bomb_in_a_folder_is_refused_naming_the_file_and_skipped(tmp_path, tiny_model):
    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "0.png").write_bytes(png(ord(c)))
    (root / "b" / "1.png").write_bytes(bomb_png())
    ds = load_dataset(f"folder:{root}")
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge, match=r"b/1\.png is 12000x12000"):
        ds.image(2)
    assert time.perf_counter() - start < 0.5
    skipped = _skipped(ds, tiny_model.preprocess)
    assert [s["index"] for s in skipped] == [2] and "1.png is 12000x12000" in skipped[0]["error"]


def _shard(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _wds(root, image: bytes):
    (root / "test").mkdir(parents=True)
    (root / "test" / "nshards.txt").write_text("1\n")
    (root / "classnames.txt").write_text("x\ny\n")
    shard = root / "test" / "0.tar"
    _shard(shard, [("s0.png", png(1)), ("s0.cls", b"0"), ("s1.png", image), ("s1.cls", b"1")])
    return shard


def test_a_bomb_in_a_wds_shard_is_refused_naming_shard_and_key(tmp_path, tiny_model):
    shard = _wds(tmp_path / "wds", bomb_png())
    ds = load_dataset(f"wds:{tmp_path / 'wds'}")
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge, match=rf"{shard}:s1\.png is 12000x12000"):
        ds.image(1)
    assert time.perf_counter() - start < 0.5
    skipped = _skipped(ds, tiny_model.preprocess)
    assert [s["index"] for s in skipped] == [1] and f"{shard}:s1.png" in skipped[0]["error"]


def test_an_undecodable_wds_sample_names_shard_and_key(tmp_path):
    shard = _wds(tmp_path / "wds", b"not an image at all")
    with pytest.raises(ValueError, match=rf"cannot read image file {shard}:s1\.png") as err:
        load_dataset(f"wds:{tmp_path / 'wds'}").image(1)
    assert "BytesIO" not in str(err.value)


def test_streaming_decodes_through_the_limit(tmp_path):
    from cliplab.train.streaming import decode_sample

    sample = {"__key__": "k7", "__shard__": str(tmp_path / "000.tar"), "png": bomb_png(), "txt": b"a caption"}
    with pytest.raises(ImageTooLarge, match=r"000\.tar:k7\.png is 12000x12000"):
        decode_sample(sample)
    sample["png"] = b"garbage"
    with pytest.raises(ValueError, match=r"000\.tar:k7\.png: not a recognised image format"):
        decode_sample(sample)


def test_hfds_image_bytes_go_through_the_limit(tmp_path):
    datasets = pytest.importorskip("datasets")

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    rows = {"img": [{"bytes": png(3), "path": None}, {"bytes": bomb_png(), "path": None}], "label": [0, 1]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "hf"))
    ds = load_dataset(f"hfds:{tmp_path / 'hf'}")
    assert ds.image(0).size == (12, 12)
    with pytest.raises(ImageTooLarge, match=r"\[1\] is 12000x12000"):
        ds.image(1)


def test_probe_images_refuse_a_bomb(tmp_path):
    from cliplab.probes.base import ProbeImages

    (tmp_path / "bomb.png").write_bytes(bomb_png())
    with pytest.raises(ImageTooLarge, match="bomb.png"):
        ProbeImages([tmp_path / "bomb.png"]).image(0)
