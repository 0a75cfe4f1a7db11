"""A data spec is parsed once, at the edge; streaming is a mode of the ``wds:`` source, with its predicate."""

import gzip
import shutil

import pytest

from cliplab.data import DataSpec, check_data_spec, load_dataset
from cliplab.data.sources import wds
from cliplab.data.streaming import ShardStream, WebDatasetStream
from cliplab.train.batches import load_training_data, training_captions
from test_streaming import write_shards


@pytest.fixture
def parses(monkeypatch):
    """Records every spec ``DataSpec.parse`` is given as text (a DataSpec passed on is not a parse)."""
    seen = []
    original = DataSpec.parse.__func__

    def counting(cls, spec):
        if not isinstance(spec, DataSpec):
            seen.append(str(spec))
        return original(cls, spec)

    monkeypatch.setattr(DataSpec, "parse", classmethod(counting))
    return seen


def test_load_and_check_parse_the_spec_once(tmp_path, image_folder, parses):
    spec = f"folder:{image_folder}"
    load_dataset(spec)
    assert parses == [spec]
    parses.clear()
    check_data_spec(spec)
    assert parses == [spec]


def test_training_data_parses_once_and_streams_through_the_wds_source(tmp_path, parses):
    spec = write_shards(tmp_path / "shards", 2, 3)
    data = load_training_data(spec, "train", {})
    assert parses == [spec]
    assert isinstance(data, WebDatasetStream) and data.spec == DataSpec.parse(spec)
    assert [p.rsplit("/", 1)[1] for p in data.shards] == ["000000.tar", "000001.tar"]
    assert len(training_captions(data, vocabulary=True)) == 6
    sampler = data.sampler(2, seed=0)
    assert isinstance(sampler, ShardStream)
    batch, _, _ = sampler.batch(sampler.initial_state())
    assert len(batch) == 2 and all("jpg" in s and "txt" in s for s in batch)


def test_one_predicate_for_streaming_and_the_map_style_source(tmp_path):
    # a .tar.gz names a shard for both (the trainer streamed it while load_dataset took it for a directory)
    spec = write_shards(tmp_path / "shards", 1, 2)
    plain = tmp_path / "shards" / "000000.tar"
    packed = tmp_path / "000000.tar.gz"
    with open(plain, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert wds.is_stream(f"wds:{packed}") and wds.is_shard_pattern(str(packed))
    assert list(load_training_data(f"wds:{packed}", "train", {}).shards) == [str(packed)]
    with pytest.raises(ValueError, match="compressed"):
        load_dataset(f"wds:{packed}")
    assert len(load_dataset(spec)) == 2  # the same pattern, map-style, for evaluation
    with pytest.raises(ValueError, match="takes no options"):
        load_training_data(f"{spec}:progress=false", "train", {})


def test_the_wds_loader_names_the_spec_it_was_given(tmp_path):
    spec = f"wds:{tmp_path / 'nowhere'}:progress=false"
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(spec)
    assert repr(spec) in str(err.value)


def test_train_preflight_checks_a_stream_as_a_stream(tmp_path, monkeypatch):
    # the map-style check refused every hub stream ("hf:// shard patterns are streamed by the trainer only")
    from cliplab._io import cache_home
    from cliplab.cli.common import UsageError
    from cliplab.cli.train import check
    from test_trainer import tiny_config

    monkeypatch.setenv("CLIPLAB_HOME", str(tmp_path / "home"))
    spec = "wds:hf://someone/shards/train/{000000..000001}.tar"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    check(tiny_config(tmp_path, data={"train": spec}))  # downloaded when the run starts
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match=r"data.train: .*2 of 2 shards not found.*HF_HUB_OFFLINE"):
        check(tiny_config(tmp_path, data={"train": spec}))
    write_shards(cache_home() / "datasets" / "wds" / "someone--shards" / "train", 2, 2)
    check(tiny_config(tmp_path, data={"train": spec}))  # cached: no network needed
    with pytest.raises(UsageError, match=r"data.train: .*1 of 3 shards not found"):
        check(tiny_config(tmp_path, data={"train": write_shards(tmp_path / "local", 2, 2).replace("01}", "02}")}))


def test_parse_returns_a_dataspec_as_it_is_and_str_round_trips(tmp_path):
    for text in ["shapes", "builtin:shapes:task=colour,n=20", f"folder:{tmp_path}", f"{tmp_path}:n=3", "/a:b"]:
        spec = DataSpec.parse(text)
        assert DataSpec.parse(spec) is spec and str(spec) == text
    derived = DataSpec.parse("shapes:n=20").with_options(corruption="fog", severity=2)  # no text: formatted
    again = DataSpec.parse(str(derived))
    assert (again.scheme, again.target, again.options) == ("shapes", "", {"n": 20, "corruption": "fog", "severity": 2})


def test_a_cli_command_parses_its_data_spec_once(tiny_model_dir, image_folder, tmp_path, capsys, parses):
    from cliplab.cli.commands import main

    spec = f"folder:{image_folder}"
    assert main(["zeroshot", str(tiny_model_dir), spec, "--json", "--quiet", "--cache-dir", str(tmp_path / "c")]) == 0
    assert '"n": 8' in capsys.readouterr().out
    assert parses == [spec]  # in the pre-flight; load_dataset is given that DataSpec


def test_a_bench_run_parses_its_data_spec_once(tmp_path, parses, monkeypatch):
    import json

    from cliplab.bench import report, run_bench
    from helpers import make_tiny_model

    def no_report(*args, **kwargs):
        # the report is its own edge: it renders from results.json's text alone (also for a saved file)
        raise ImportError("no report in this test")

    monkeypatch.setattr(report, "render_sections", no_report)
    spec = "shapes:image_size=32"
    results = run_bench(make_tiny_model(), spec, tmp_path, n=20, only=["zeroshot"], cache_dir=False, progress=False)
    assert parses == [spec]  # in run_bench; the context, the data kind and every load get the DataSpec
    assert results["data"]["spec"] == spec and results["data"]["kind"] == "built-in world"
    assert json.loads((tmp_path / "results.json").read_text())["data"]["spec"] == spec
