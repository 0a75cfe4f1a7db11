"""The prompt protocols' resume file (few-shot and base-to-new sections) and ``cliplab adapt --resume-file``."""

from __future__ import annotations

import pytest

from cliplab.adapt.prompting import run_prompt_few_shot


def test_prompt_protocol_resumes_from_its_file(tiny, colour_world, tmp_path, monkeypatch):
    from cliplab.adapt.prompting import protocol

    train, test = colour_world
    kw = {
        "methods": ["coop"],
        "shots": [1],
        "seeds": [1, 2],
        "params": {"coop": {"epochs": 1}},
        "search": False,
        "embed_kw": {"cache_dir": False},
        "progress": False,
    }
    path = tmp_path / "runs.json"
    first = run_prompt_few_shot(tiny, train, test, resume_file=path, **kw)
    assert path.is_file()

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished run was fitted again")

    monkeypatch.setattr(protocol, "_fit_selected", no_fit)
    again = run_prompt_few_shot(tiny, train, test, resume_file=path, **kw)
    assert again["results"] == first["results"]
    with pytest.raises(ValueError, match="another run"):
        run_prompt_few_shot(tiny, train, test, resume_file=path, **{**kw, "seeds": [3]})


def test_base_to_new_resumes_from_the_same_file(tiny, colour_world, tmp_path, monkeypatch):
    import json

    from cliplab.adapt.prompting import prompt_base_to_new, protocol

    train, test = colour_world
    kw = {
        "methods": ["coop"],
        "seeds": [1, 2],
        "params": {"coop": {"epochs": 1}},
        "search": False,
        "embed_kw": {"cache_dir": False},
    }
    path = tmp_path / "runs.json"
    few = run_prompt_few_shot(tiny, train, test, resume_file=path, shots=[1], progress=False, **kw)
    b2n = prompt_base_to_new(tiny, train, test, k=1, resume_file=path, **kw)
    sections = json.loads(path.read_text())["sections"]
    assert sorted(sections) == ["base_to_new", "few_shot"] and sorted(sections["base_to_new"]["done"]) == [
        "coop|1",
        "coop|2",
    ]

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished run was fitted again")

    monkeypatch.setattr(protocol, "_fit_selected", no_fit)
    assert prompt_base_to_new(tiny, train, test, k=1, resume_file=path, **kw) == b2n
    assert (
        run_prompt_few_shot(tiny, train, test, resume_file=path, shots=[1], progress=False, **kw)["results"]
        == (few["results"])
    )
    with pytest.raises(ValueError, match="another run"):
        prompt_base_to_new(tiny, train, test, k=2, resume_file=path, **kw)
    # a file written before the protocols had sections is the few-shot protocol's
    old = tmp_path / "old.json"
    old.write_text(json.dumps(sections["few_shot"]))
    again = run_prompt_few_shot(tiny, train, test, resume_file=old, shots=[1], progress=False, **kw)
    assert again["results"] == few["results"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json"):
        prompt_base_to_new(tiny, train, test, k=1, resume_file=tmp_path / "bad.json", **kw)


def test_cli_adapt_runs_prompt_methods(tiny, tmp_path, capsys):
    import json

    from cliplab.cli.commands import main

    model_dir = tmp_path / "tiny"
    tiny.save(model_dir)
    resume = tmp_path / "runs.json"
    argv = [
        "adapt",
        str(model_dir),
        "shapes:task=colour,n=24,image_size=32",
        "--methods",
        "zeroshot,coop",
        "--shots",
        "1",
        "--seeds",
        "1",
        "--views",
        "0",
        "--no-search",
        "--no-cache",
        "--json",
        "-q",
        "--resume-file",
        str(resume),
        "--base-to-new",
    ]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["methods"] == ["zeroshot", "coop"] and "1" in res["results"]["coop"]
    assert "coop" in res["base_to_new"]["results"]
    sections = json.loads(resume.read_text())["sections"]
    assert sorted(sections) == ["base_to_new", "few_shot"] and list(sections["base_to_new"]["done"]) == ["coop|1"]
