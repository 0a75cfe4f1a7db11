"""Every command checks all its specs and paths before loading a model or reading data (issue #11, 5)."""

import json

import pytest

from cliplab.cli.commands import main
from cliplab.data.registry import check_data_spec
from cliplab.models.registry import check_model_spec
from helpers import write_random_images


class Loaded(AssertionError):
    """A model or dataset was loaded although the command should have stopped first."""


@pytest.fixture
def no_loading(monkeypatch):
    """Loading a model or a dataset fails the test (main() does not catch AssertionError)."""
    import cliplab.data
    import cliplab.data.registry
    import cliplab.models
    import cliplab.models.registry

    def refuse(*args, **kwargs):
        raise Loaded(f"loaded {args[:1]}")

    for module in (cliplab.models, cliplab.models.registry):
        monkeypatch.setattr(module, "load_model", refuse)
    for module in (cliplab.data, cliplab.data.registry):
        monkeypatch.setattr(module, "load_dataset", refuse)


@pytest.fixture
def files(tmp_path, tiny_model_dir):
    """A model directory, a class folder, a flat image folder, a caption file, a not-a-model folder."""
    classes = tmp_path / "classes"
    write_random_images(classes, ["a/0.png", "a/1.png", "b/0.png", "b/1.png"])
    flat = tmp_path / "flat"
    write_random_images(flat, ["0.png", "1.png"])
    captions = tmp_path / "caps.csv"
    captions.write_text("image,caption\nflat/0.png,a red circle\nflat/1.png,a blue square\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a dataset\n")
    (tmp_path / "empty").mkdir()
    return {
        "model": str(tiny_model_dir),
        "classes": str(classes),
        "flat": str(flat),
        "captions": str(captions),
        "notes": str(notes),
        "empty": str(tmp_path / "empty"),
        "missing": str(tmp_path / "missing"),
        "cache": str(tmp_path / "cache"),
        "out": str(tmp_path / "out"),
    }


def fails(argv, capsys, *expected):
    """Run the CLI; it must exit 2 with ``cliplab: error:`` naming every ``expected`` piece."""
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cliplab: error: "), err
    for piece in expected:
        assert piece in err, (piece, err)
    return err


def test_bench_reports_a_missing_ood_path_before_any_work(files, no_loading, capsys, tmp_path):
    ood = str(tmp_path / "no-such-ood")
    argv = ["bench", "--model", files["model"], "--data", files["classes"], "--ood-data", files["flat"]]
    argv += ["--ood-data", ood, "--cache-dir", files["cache"], "-o", files["out"]]
    fails(argv, capsys, "--ood-data", ood)
    # nothing was embedded or written
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--data", "shapes:colour=red"], ["--data", "'shapes:colour=red'", "'colour'"]),
        (["--data", "shapes:task=colur"], ["--data", "'shapes:task=colur'", "task"]),
        (["--data", "shapes:n"], ["--data", "expected key=value"]),
        (["--data", "shapes:corruption=fog,severity=9"], ["--data", "severity"]),
        (["--data", "{notes}"], ["--data", "notes.txt", "unsupported caption file type"]),
        (["--data", "{empty}"], ["--data", "neither class sub-folders nor image files"]),
        (["--data", "{classes}", "--ood-data", "shapes:held_out=shape"], ["--ood-data", "held_out"]),
        (["--model", "builtin:nope"], ["--model", "'builtin:nope'", "no built-in model"]),
        (["--model", "{missing}"], ["--model", "unknown model spec", "missing"]),
        (["--model", "{flat}"], ["--model", "no config.json"]),
        (["--model", "hf:"], ["--model", "needs a repository id"]),
        (["--only", "zeroshot,fewshot"], ["--only", "'fewshot'", "zeroshot"]),
        (["-o", "{notes}"], ["--output", "notes.txt", "not a directory"]),
        (["--cache-dir", "{notes}"], ["--cache-dir", "notes.txt"]),
    ],
)
def test_bench_checks_every_option_first(extra, expected, files, no_loading, capsys):
    argv = ["bench", "--model", files["model"], "-o", files["out"], *(a.format(**files) for a in extra)]
    fails(argv, capsys, *expected)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["embed", "{model}", "{missing}.csv"], ["DATA", "missing.csv", "no such file or directory"]),
        (["embed", "{model}", "{classes}", "-o", "{empty}"], ["--output", "is a directory"]),
        (["embed", "openclip:", "shapes"], ["MODEL", "needs an architecture"]),
        (["zeroshot", "{model}", "shapes:split=dev"], ["DATA", "split"]),
        (["zeroshot", "{model}", "{classes}", "--classnames", "{missing}"], ["class-names file not found"]),
        (["zeroshot", "{model}", "{classes}", "--templates", "imagenet81"], ["--templates", "imagenet81"]),
        (["zeroshot", "{model}", "{classes}", "--templates", "{missing}.json"], ["templates file not found"]),
        (["retrieve", "{model}", "{missing}.jsonl"], ["DATA", "missing.jsonl"]),
        (["score", "{model}", "--images", "{missing}.png", "--captions", "x"], ["--images", "missing.png"]),
        (["adapt", "{model}", "{classes}", "--test-data", "{missing}"], ["--test-data", "missing"]),
        (["adapt", "{model}", "{classes}", "--methods", "tip,nope"], ["--methods", "'nope'"]),
        (["adapt", "{model}", "{classes}", "--aux-model", "builtin:nope"], ["--aux-model", "builtin:nope"]),
        (["adapt", "{model}", "shapes:objects=3"], ["DATA", "objects"]),
        (["ood", "{model}", "{classes}", "{flat}", "{missing}"], ["OOD_DATA", "missing"]),
        (["ood", "{model}", "{classes}", "{flat}", "--train-data", "{notes}"], ["--train-data", "notes.txt"]),
        (["ood", "{model}", "{classes}", "{flat}", "--methods", "msp,nope"], ["--methods", "'nope'"]),
        (["calibrate", "{model}", "{classes}", "--val-data", "{missing}"], ["--val-data", "missing"]),
        (["estimate", "{model}", "shapes", "shapes:style=solid", "shapes:style=oil"], ["DATA", "style"]),
        (["estimate", "{model}", "{classes}", "{classes}", "{classes}"], ["--val-data is required"]),
        (["estimate", "{model}", "shapes", "--family", "corruptions", "--val-data", "{missing}"], ["--val-data"]),
        (["index", "{model}", "{missing}", "-o", "{out}"], ["IMAGE_DIR", "missing"]),
        (["index", "{model}", "{notes}", "-o", "{out}"], ["IMAGE_DIR", "not a directory"]),
        (["index", "{model}", "{flat}", "-o", "{classes}"], ["--output", "not a cliplab index"]),
        (["index", "builtin:nope", "{flat}", "-o", "{out}"], ["MODEL", "builtin:nope"]),
    ],
)
def test_commands_check_specs_and_paths_first(argv, expected, files, no_loading, capsys):
    fails([a.format(**files) for a in argv], capsys, *expected)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"data": {"train": "shapes:n=64,colour=red"}}, ["data.train", "'colour'"]),
        ({"data": {"train": "{missing}"}}, ["data.train", "missing"]),
        ({"data": {"train": "{captions}", "options": {"caption_column": "text"}}}, ["data.train", "caption_column"]),
        ({"model": {"spec": "builtin:nope"}}, ["model.spec", "builtin:nope"]),
        ({"eval": {"zeroshot": "{missing}"}}, ["eval.zeroshot", "missing"]),
        ({"eval": {"retrieval": "shapes:task=nope"}}, ["eval.retrieval", "task"]),
        ({"eval": {"zeroshot": "shapes", "templates": "imagenet81"}}, ["eval.templates", "imagenet81"]),
        ({"loss": {"distill": {"teacher": "{missing}"}}}, ["loss.distill.teacher", "missing"]),
        ({"output_dir": "{notes}"}, ["output_dir", "notes.txt"]),
    ],
)
def test_train_checks_its_config_specs_first(change, expected, files, no_loading, capsys, tmp_path):
    config = {"model": {"spec": files["model"]}, "data": {"train": "shapes:n=64,image_size=32"}, "steps": 1}
    config["output_dir"] = files["out"]
    for key, value in json.loads(json.dumps(change).replace("{missing}", files["missing"])).items():
        if isinstance(value, dict):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    text = json.dumps(config)
    for name in ("captions", "notes"):
        text = text.replace("{" + name + "}", files[name])
    path = tmp_path / "train.json"
    path.write_text(text)
    fails(["train", str(path)], capsys, *expected)
    assert not (tmp_path / "out").exists()


def test_train_missing_config(tmp_path, no_loading, capsys):
    fails(["train", str(tmp_path / "nope.yaml")], capsys, "CONFIG", "nope.yaml")


def test_bench_compare_missing_file(tmp_path, no_loading, capsys):
    fails(["bench", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")], capsys, "--compare", "a.json")


# -- the checks accept what the loaders accept ----------------------------------------------------------------------


def test_checks_accept_valid_specs(files, no_loading):
    for spec in ("shapes", "builtin:shapes", "shapes:task=colour,n=2000,objects=mixed", "shapes:held_out=shapes"):
        check_data_spec(spec)
    check_data_spec("shapes:split=train,corruption=fog,severity=2", n=10)
    check_data_spec(files["classes"])
    check_data_spec(files["classes"], classnames=["x", "y"])
    check_data_spec(files["flat"])
    check_data_spec(files["captions"], caption_key="caption")
    for spec in (files["model"], "builtin:shapes", "hf:openai/clip-vit-base-patch32"):
        check_model_spec(spec)


def test_checks_agree_with_the_loaders(files):
    """A spec the check rejects, the loader rejects too (the loader's unknown shapes option is a TypeError)."""
    from cliplab.data import load_dataset

    bad = [
        "shapes:colour=red",
        "shapes:task=colur",
        "shapes:n=0",
        "shapes:image_size=8",
        "shapes:n",
        files["missing"],
        files["notes"],
        files["empty"],
    ]
    for spec in bad:
        with pytest.raises((ValueError, FileNotFoundError)) as checked:
            check_data_spec(spec)
        with pytest.raises((ValueError, FileNotFoundError, TypeError)):
            load_dataset(spec)
        assert spec in str(checked.value) or repr(spec) in str(checked.value)
    with pytest.raises(ValueError, match="no class sub-folders"):
        check_data_spec(files["flat"], classnames=["x"])
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_dataset(files["flat"], classnames=["x"])


def test_valid_command_still_runs(files, capsys):
    """The checks do not get in the way of a correct command."""
    out = files["out"] + ".safetensors"
    assert main(["embed", files["model"], files["classes"], "-o", out, "--quiet", "--json", "--no-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == [4, 16]
