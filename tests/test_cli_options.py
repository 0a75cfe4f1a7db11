"""The command line before any work (issue 24): option checks at parse time, start-up without torch, Ctrl-C,
checked command entries, --skip-bad-images, help text, the default output folder's .gitignore."""

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cliplab.cli import commands
from cliplab.cli.commands import COMMANDS, Command, build_parser, check_commands, main

SRC = str(Path(__file__).parents[1] / "src")


class Loaded(AssertionError):
    """A model or dataset was loaded although the command should have stopped first."""


@pytest.fixture
def no_loading(monkeypatch):
    """Loading a model or a dataset fails the test."""
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


BAD_OPTIONS = [
    (["adapt", "builtin:shapes", "shapes", "--shots", "0", "--seeds", "1"], "--shots"),
    (["adapt", "builtin:shapes", "shapes", "--shots", "1,x"], "--shots"),
    (["adapt", "builtin:shapes", "shapes", "--seeds", ""], "--seeds"),
    (["adapt", "builtin:shapes", "shapes", "--seeds", "-1"], "--seeds"),
    (["adapt", "builtin:shapes", "shapes", "--views", "-1"], "--views"),
    (["adapt", "builtin:shapes", "shapes", "--batch-size", "0"], "--batch-size"),
    (["bench", "--n", "0"], "--n"),
    (["bench", "--seeds", "1,x"], "--seeds"),
    (["bench", "--batch-size", "-4"], "--batch-size"),
    (["embed", "builtin:shapes", "shapes", "--num-workers", "-1"], "--num-workers"),
    (["zeroshot", "builtin:shapes", "shapes", "--batch-size", "many"], "--batch-size"),
    (["retrieve", "builtin:shapes", "shapes", "--ks", "1,0"], "--ks"),
    (["retrieve", "builtin:shapes", "shapes", "--ks", ","], "--ks"),
    (["score", "builtin:shapes", "--images", "a.png", "--captions", "a", "--w", "0"], "--w"),
    (["ood", "builtin:shapes", "shapes", "shapes", "--batch-size", "0"], "--batch-size"),
    (["calibrate", "builtin:shapes", "shapes", "--num-workers", "x"], "--num-workers"),
    (["estimate", "builtin:shapes", "shapes", "--batch-size", "1.5"], "--batch-size"),
    (["probe", "builtin:shapes", "--batch-size", "0"], "--batch-size"),
    (["curate", "c.csv", "-o", "o.csv", "--min-words", "-1"], "--min-words"),
    (["curate", "c.csv", "-o", "o.csv", "--max-words", "0"], "--max-words"),
    (["curate", "c.csv", "-o", "o.csv", "--min-latin", "1.5"], "--min-latin"),
    (["curate", "c.csv", "-o", "o.csv", "--min-known", "nan"], "--min-known"),
    (["curate", "c.csv", "-o", "o.csv", "--clip-top", "0"], "--clip-top"),
    (["curate", "c.csv", "-o", "o.csv", "--clip-threshold", "2"], "--clip-threshold"),
    (["curate", "c.csv", "-o", "o.csv", "--dedup-threshold", "1.01"], "--dedup-threshold"),
    (["curate", "c.csv", "-o", "o.csv", "--balance-t", "0"], "--balance-t"),
    (["curate", "c.csv", "-o", "o.csv", "--seed", "-3"], "--seed"),
    (["train", "configs/shapes-tiny.yaml", "--steps", "0"], "--steps"),
    (["finetune", "configs/finetune-shapes.yaml", "--steps", "-5"], "--steps"),
    (["index", "builtin:shapes", "imgs", "-o", "idx", "--chunk-size", "0"], "--chunk-size"),
    (["index", "builtin:shapes", "imgs", "-o", "idx", "--exact-threshold", "-1"], "--exact-threshold"),
    (["serve", "idx", "--port", "70000"], "--port"),
    (["serve", "idx", "--max-upload-mb", "0"], "--max-upload-mb"),
]


@pytest.mark.parametrize("argv, option", BAD_OPTIONS, ids=[" ".join(a[:1] + [o]) for a, o in BAD_OPTIONS])
def test_bad_numbers_and_lists_stop_at_parse_time_naming_the_option(argv, option, no_loading, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"cliplab {argv[0]}: error: argument {option}"), err


def test_good_values_parse():
    args = build_parser().parse_args(["adapt", "m", "d", "--shots", "1, 2,4", "--seeds", "0", "--views", "0"])
    assert (args.shots, args.seeds, args.views) == ([1, 2, 4], [0], 0)
    args = build_parser().parse_args(["adapt", "m", "d"])
    assert (args.shots, args.seeds) == ([1, 2, 4, 8, 16], [1, 2, 3])
    args = build_parser().parse_args(["retrieve", "m", "d"])
    assert args.ks == [1, 5, 10]
    args = build_parser().parse_args(["serve", "idx", "--port", "0"])
    assert args.port == 0


# -- start-up ---------------------------------------------------------------------------------------------------------

_HEAVY = ("torch", "numpy", "transformers", "PIL", "scipy", "open_clip", "sklearn")

_IMPORT_CHECK = textwrap.dedent(
    """
    import sys
    from cliplab.cli.commands import COMMANDS, main
    runs = [["--help"], *([c.name, "--help"] for c in COMMANDS), ["adapt", "m", "d", "--shots", "0"], ["nope"]]
    for argv in runs:
        try:
            main(argv)
        except SystemExit:
            pass
    print("HEAVY", [m for m in {heavy!r} if m in sys.modules])
    """
)


def test_help_and_usage_errors_import_no_torch():
    """``cliplab --help``, ``cliplab X --help`` for every X and a usage error import none of the heavy stack."""
    code = _IMPORT_CHECK.format(heavy=_HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC}, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []", out.stdout[-500:]


def test_bench_help_lists_the_stages_of_the_registry():
    import cliplab.bench.runner  # noqa: F401  (registers the built-in stages)
    from cliplab.bench.stage import STAGES
    from cliplab.cli.bench import stage_names

    assert stage_names() == sorted(STAGES)
    text = build_parser()._subparsers._group_actions[0].choices["bench"].format_help()  # type: ignore[union-attr]
    assert all(name in text.replace("\n", " ").replace("  ", " ") for name in STAGES)


def test_probe_help_lists_the_probe_sources():
    from cliplab.cli.probe import PROBE_FORMS
    from cliplab.probes.formats import probe_forms

    assert list(PROBE_FORMS) == probe_forms()


def test_every_option_of_every_command_has_help():
    sub = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    missing = [
        f"{name} {action.option_strings[-1] if action.option_strings else action.dest}"
        for name, parser in sub.choices.items()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not missing, missing


# -- the command table ------------------------------------------------------------------------------------------------


def test_every_command_entry_resolves_and_builds_its_own_parser():
    check_commands()
    assert [c.name for c in COMMANDS] == list(build_parser()._subparsers._group_actions[0].choices)  # type: ignore
    for command in COMMANDS:
        assert callable(command.resolve("handler"))


@pytest.mark.parametrize(
    "entry, message",
    [
        (Command("bench", "bench", "add_benchh", "run"), "add_benchh"),
        (Command("bench", "bench", "add_bench", "runn"), "runn"),
        (Command("bench", "embed", "add_embed", "run"), "not 'bench'"),
        (Command("bench", "bench", "DEFAULT_MODEL", "run"), "not a function"),
    ],
)
def test_a_wrong_command_entry_is_reported(entry, message, monkeypatch):
    monkeypatch.setattr(commands, "COMMANDS", (entry,))
    with pytest.raises(RuntimeError, match=message):
        check_commands()


# -- Ctrl-C ----------------------------------------------------------------------------------------------------------


def test_ctrl_c_while_working_exits_130_with_one_line(monkeypatch, capsys):
    import cliplab.cli.zeroshot

    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cliplab.cli.zeroshot, "run", interrupt)
    assert main(["zeroshot", "m", "d", "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == "cliplab: interrupted"


def test_ctrl_c_while_building_the_parser_exits_130(monkeypatch, capsys):
    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "build_parser", interrupt)
    assert main(["--help"]) == 130
    assert capsys.readouterr().err.strip() == "cliplab: interrupted"


def test_ctrl_c_while_importing_the_command_line_exits_130(monkeypatch, capsys):
    """The console script's own import of ``cliplab.cli.commands`` (``cliplab.cli.entry``)."""
    import cliplab.cli

    class Interrupt:
        def find_spec(self, name, path=None, target=None):
            if name == "cliplab.cli.commands":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "cliplab.cli.commands")
    monkeypatch.delattr(cliplab.cli, "commands", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupt(), *sys.meta_path])
    with pytest.raises(SystemExit) as stop:
        cliplab.cli.entry()
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip() == "cliplab: interrupted"


@pytest.mark.parametrize("after", ["cliplab.cli.commands", "torch.nn.modules.module"])
def test_ctrl_c_during_start_up_of_a_real_process(after):
    """SIGINT while ``python -m cliplab`` imports the stack: status 130, one line, no traceback."""
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "cliplab", "zeroshot", "builtin:shapes", "shapes", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": SRC},
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # -X importtime reports each import as it finishes
        if line.rstrip().endswith(after):
            break  # main() runs now and imports torch & co. (seconds): interrupt it there
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 130, err[-2000:]
    assert [line for line in lines if line.strip()] == ["cliplab: interrupted"], lines


# -- --skip-bad-images ------------------------------------------------------------------------------------------------


@pytest.fixture
def folder_with_a_corrupt_image(image_folder):
    bad = image_folder / "red_circle" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return image_folder, bad


def test_one_corrupt_image_aborts_without_the_option(tiny_model_dir, folder_with_a_corrupt_image, capsys):
    folder, bad = folder_with_a_corrupt_image
    assert main(["zeroshot", str(tiny_model_dir), str(folder), "--quiet", "--no-cache", "--num-workers", "0"]) == 2
    assert "9.png" in capsys.readouterr().err


def test_skip_bad_images_lists_what_was_skipped(tiny_model_dir, folder_with_a_corrupt_image, capsys):
    folder, bad = folder_with_a_corrupt_image
    argv = ["zeroshot", str(tiny_model_dir), str(folder), "--quiet", "--no-cache", "--skip-bad-images"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 8  # the 8 good images, with their labels
    assert [s["file"] for s in out["skipped_images"]] == [str(bad)]
    assert out["skipped_images"][0]["error"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "skipped 1 unreadable image(s):" in text and str(bad) in text
    # embed: the features of the good images, their labels, and the skipped file in --json
    out_file = folder.parent / "f.safetensors"
    argv = ["embed", str(tiny_model_dir), str(folder), "-o", str(out_file), "--quiet", "--skip-bad-images", "--json"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == [8, 16] and [s["file"] for s in info["skipped_images"]] == [str(bad)]


def test_skip_bad_images_in_json_is_empty_when_all_images_read(tiny_model_dir, image_folder, capsys):
    argv = ["zeroshot", str(tiny_model_dir), str(image_folder), "--quiet", "--no-cache", "--skip-bad-images"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_images"] == []
    assert main([str(a) for a in argv[:3]] + ["--quiet", "--no-cache", "--json"]) == 0
    assert "skipped_images" not in json.loads(capsys.readouterr().out)


def test_bench_records_skipped_images_and_ignores_its_default_folder(
    tiny_model_dir, folder_with_a_corrupt_image, monkeypatch, tmp_path, capsys
):
    folder, bad = folder_with_a_corrupt_image
    run_dir = tmp_path / "checkout"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    argv = ["bench", "--model", str(tiny_model_dir), "--data", str(folder), "--only", "zeroshot", "--quiet"]
    assert main([*argv, "--skip-bad-images", "--no-cache", "--json"]) == 0
    capsys.readouterr()
    results = json.loads((run_dir / "cliplab-bench" / "results.json").read_text())
    assert [s["file"] for s in results["skipped_images"]] == [str(bad)]
    assert (run_dir / "cliplab-bench" / ".gitignore").read_text().splitlines()[-1] == "*"
    # a folder the user names gets no .gitignore
    assert main([*argv, "--skip-bad-images", "--no-cache", "-o", str(run_dir / "mine")]) == 0
    assert not (run_dir / "mine" / ".gitignore").exists()


def test_bench_few_shot_pairs_support_images_with_their_features_when_one_is_skipped(
    tiny_model_dir, folder_with_a_corrupt_image, tmp_path, capsys
):
    """The few-shot stage embeds augmented passes of the support images row for row with the support features:
    with an unreadable image left out of the features it must leave the dataset too."""
    folder, bad = folder_with_a_corrupt_image
    argv = ["bench", "--model", str(tiny_model_dir), "--data", str(folder), "--only", "adapt", "--quiet"]
    argv += ["--seeds", "1", "--skip-bad-images", "--no-cache", "-o", str(tmp_path / "run")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [s["file"] for s in results["skipped_images"]] == [str(bad)]
    assert results["stages"]["adapt"]["results"]  # every method ran


def test_the_gitignore_makes_git_ignore_the_default_output(tmp_path):
    from cliplab.cli.common import default_output_dir

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    default_output_dir(tmp_path / "cliplab-bench", tmp_path / "cliplab-bench")
    (tmp_path / "cliplab-bench" / "results.json").write_text("{}")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path, capture_output=True, text=True
    )
    assert status.stdout == ""


# -- a shipped config shortened from the command line ----------------------------------------------------------------


def test_train_steps_shorter_than_the_warmup_clamps_it_with_a_note(tmp_path, caplog):
    from cliplab.cli.preflight import load_config
    from cliplab.train.config import TrainConfig

    config_file = Path(__file__).parents[1] / "configs" / "shapes-tiny.yaml"
    shipped = TrainConfig.from_file(config_file)
    assert shipped.schedule.warmup_steps > 10 and not shipped.notes
    args = argparse.Namespace(config=str(config_file), steps=10, output_dir=str(tmp_path / "run"), device=None)
    with caplog.at_level("WARNING", logger="cliplab.train.config"):
        config = load_config(TrainConfig, args, "training config")
    assert config.steps == 10 and config.schedule.warmup_steps == 10
    assert shipped.schedule.warmup_steps == TrainConfig.from_file(config_file).schedule.warmup_steps  # not mutated
    assert len(config.notes) == 1 and "clamped to 10" in config.notes[0] and "clamped" in caplog.text
    config.save(tmp_path / "config.json")  # what the run writes
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["notes"] == config.notes and recorded["schedule"]["warmup_steps"] == 10
    assert TrainConfig.from_dict(recorded) == config
    assert "notes" not in shipped.to_dict()
