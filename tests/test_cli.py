import json

import pytest

from cliplab.cli.commands import main


def test_zeroshot_cli_on_image_folder(tiny_model_dir, image_folder, capsys, tmp_path):
    rc = main(
        ["zeroshot", str(tiny_model_dir), str(image_folder), "--json", "--quiet", "--cache-dir", str(tmp_path / "c")]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 8 and 0.0 <= out["acc1"] <= 1.0
    assert out["classnames"] == ["blue square", "red circle"]
    rc = main(
        [
            "zeroshot",
            str(tiny_model_dir),
            str(image_folder),
            "--quiet",
            "--templates",
            "cifar18",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert rc == 0 and "acc1" in capsys.readouterr().out


def test_embed_cli_writes_features(tiny_model_dir, image_folder, tmp_path, capsys):
    from cliplab import Features

    out = tmp_path / "f.safetensors"
    assert (
        main(["embed", str(tiny_model_dir), str(image_folder), "-o", str(out), "--quiet", "--json", "--no-cache"]) == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == [8, 16]
    assert Features.load(out).images.shape == (8, 16)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["zeroshot", "no-such-model", "shapes"], "unknown model spec"),
        (["zeroshot", "{model}", "/no/such/data"], "unknown dataset spec"),
        (["zeroshot", "{model}", "{images}", "--classnames", "{names}"], "3 class names given"),
        (["zeroshot", "{model}", "{images}", "--templates", "{badtemplates}"], "not valid JSON"),
    ],
)
def test_cli_errors_are_clear(argv, message, tiny_model_dir, image_folder, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    bad = tmp_path / "t.json"
    bad.write_text("{oops")
    argv = [a.format(model=tiny_model_dir, images=image_folder, names=names, badtemplates=bad) for a in argv]
    assert main([*argv, "--quiet", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cliplab: error:") and message in err


def test_cli_empty_class_folder(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "d" / "cls").mkdir(parents=True)
    assert main(["zeroshot", str(tiny_model_dir), str(tmp_path / "d"), "--quiet"]) == 2
    assert "no image files" in capsys.readouterr().err
