"""What ``cliplab bench`` shows: the progress line, the final summary, the report's cards and sections, the
templates record, skipped images (issue 24)."""

from __future__ import annotations

import copy
import io
import json
import logging

import pytest
import torch

from cliplab import progress
from cliplab.bench import run_bench
from helpers import make_tiny_model, write_shapes_folder


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal (the progress line is drawn on terminals only)."""

    def isatty(self) -> bool:
        return True


def frames(stream: io.StringIO) -> list[str]:
    """The successive states of the status line (each redraw starts with carriage return + erase line)."""
    return [f for f in stream.getvalue().split("\r\x1b[K") if f]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A tiny run of three cheap stages on 32-px built-in data: (output dir, results)."""
    out = tmp_path_factory.mktemp("bench_small")
    results = run_bench(
        make_tiny_model(),
        "shapes:image_size=32",
        out,
        n=40,
        only=["zeroshot", "linear_probe", "calibration"],
        cache_dir=out / "cache",
        progress=False,
    )
    return out, results


# -- 1. progress ----------------------------------------------------------------------------------------------
def test_bench_progress_line_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(progress.Display, "MIN_INTERVAL", 0.0)  # draw every update (a cheap stage is fast)
    model = make_tiny_model()
    stream, logged = FakeTerminal(), []
    kw = {"n": 40, "only": ["zeroshot"], "cache_dir": False, "log": logged.append}
    run_bench(model, "shapes:image_size=32", tmp_path / "a", progress_stream=stream, **kw)
    shown = frames(stream)
    assert any("stage 1/1 zeroshot" in f for f in shown)
    assert any("embed shapes-shape-test" in f and "img" in f for f in shown)  # the step inside the stage
    assert any("left in" in f for f in shown)  # a time-left estimate
    assert stream.getvalue().endswith("\r\x1b[K")  # the line is erased at the end
    assert logged == [logged[0]] and "zeroshot done in" in logged[0]  # log lines go above the line

    quiet = FakeTerminal()
    run_bench(model, "shapes:image_size=32", tmp_path / "b", progress=False, progress_stream=quiet, **kw)
    assert quiet.getvalue() == ""
    piped = io.StringIO()  # not a terminal: no status line
    run_bench(model, "shapes:image_size=32", tmp_path / "c", progress_stream=piped, **kw)
    assert "stage 1/1" not in piped.getvalue()


def test_nested_steps_and_time_left(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(progress.Display, "MIN_INTERVAL", 0.0)
    stream = FakeTerminal()
    with progress.display(stream=stream, stages=2, title="[t]") as shown:
        assert shown is not None and progress.current_display() is shown
        with shown.stage("first", remaining=["second"]):
            with progress.step("outer", 4, enabled=True) as outer:
                clock[0] += 10
                outer.update()  # 1/4 in 10 s
                with progress.step("inner", 2) as inner:  # inherits enabled
                    clock[0] += 5
                    inner.update()  # (1 + 1/2) / 4 done in 15 s: 25 s left
                    line = shown.line()
    assert "stage 1/2 first" in line and "outer 1/4 › inner 1/2" in line
    assert "~25 s left in outer" in line and "in all" not in line  # no expected durations: no run estimate
    assert progress.current_display() is None
    with progress.display(stream=FakeTerminal(), stages=2, expected={"first": 60, "second": 40}) as shown:
        with shown.stage("first", remaining=["second"]):
            clock[0] += 20
            assert "~1 min 20 s left in all" in shown.line()  # 40 s of the first stage + 40 s of the second


def test_prompt_learner_reports_every_epoch(tiny, monkeypatch):
    from cliplab.adapt.prompting import CoOp

    monkeypatch.setattr(progress.Display, "MIN_INTERVAL", 0.0)
    f = tiny.encode_images(torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    y = torch.arange(6) % 3
    counts = []
    real_update = progress.Step.update

    def update(self, n=1):
        counts.append((self.label, self.done + n, self.total, self.unit))
        real_update(self, n)

    monkeypatch.setattr(progress.Step, "update", update)
    stream = FakeTerminal()
    with progress.display(stream=stream), progress.step("prompt few-shot", 1, enabled=True):
        CoOp(n_ctx=2, epochs=3, batch_size=4).fit(tiny, f, y, ["red", "green", "blue"])  # progress=False: inherits
    assert counts == [("CoOp", 1, 3, "epoch"), ("CoOp", 2, 3, "epoch"), ("CoOp", 3, 3, "epoch")]
    assert any("prompt few-shot 0/1 › CoOp 3/3 epoch" in f for f in frames(stream))
    counts.clear()
    CoOp(n_ctx=2, epochs=2, batch_size=4).fit(tiny, f, y, ["red", "green", "blue"])  # nothing reports: silent
    assert counts == [("CoOp", 1, 2, "epoch"), ("CoOp", 2, 2, "epoch")]  # counted, drawn nowhere


# -- 2. the final summary -------------------------------------------------------------------------------------
def test_cli_summary_prints_every_stage_headline(tiny_model_dir, tmp_path, capsys):
    from cliplab.cli.commands import main

    out = tmp_path / "run"
    args = ["bench", "--model", str(tiny_model_dir), "--data", "shapes:image_size=32", "--n", "40"]
    assert main([*args, "--only", "zeroshot,linear_probe,calibration", "-o", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    summary = text.split("headline numbers of every stage", 1)[1]
    for label in ("zero-shot accuracy", "linear probe acc@1", "calibration error (ECE)"):
        assert label in summary
    assert "built-in world" in summary and "shape task" in summary


# -- 3. cards, sections and the run table ---------------------------------------------------------------------
def test_cards_name_task_and_data_and_calibration_is_in_distribution(small_run):
    from cliplab.bench.report import headlines

    _, results = small_run
    cal = results["stages"]["calibration"]
    assert (cal["task"], cal["style"]) == ("shape", "solid")
    assert set(cal["shifted"]) == {"style:outline", "style:sketch", "gaussian_noise@3", "gaussian_blur@3"}
    assert all({"ece", "ece_scaled", "accuracy"} <= set(s) for s in cal["shifted"].values())
    cards = {label: detail for _, label, _, detail in headlines(results)}
    assert cards["calibration error (ECE)"].startswith("shape task · accuracy")
    assert "outline" not in cards["calibration error (ECE)"]  # the shifted sets are in the section
    assert all(detail.endswith("built-in world") for detail in cards.values())
    assert "shape task" in cards["linear probe acc@1"]


def test_report_names_the_kind_of_data(small_run, tmp_path):
    from cliplab.bench.report import headlines, write_report

    _, results = small_run
    wds = copy.deepcopy(results)
    wds["data"] = {"spec": "wds:/data/wds_cifar10", "n": 40, "ood": []}  # an older file: no data.kind
    for stage in ("linear_probe", "calibration"):
        wds["stages"][stage].update(task="classes", style=None)
    wds["stages"]["zeroshot"] = {"classes": wds["stages"]["zeroshot"]["shape"]}
    html = write_report(wds, tmp_path / "report.html").read_text()
    assert "folder classes" not in html
    assert "classes (webdataset wds_cifar10)" in html
    details = [d for _, _, _, d in headlines(wds)]
    assert details and all(d.endswith("webdataset wds_cifar10") for d in details)
    assert "wds:/data/wds_cifar10 (webdataset)" in html  # the run table


def test_linear_probe_section_and_small_numbers(small_run, tmp_path):
    from cliplab.bench import html as H
    from cliplab.bench.report import write_report

    _, results = small_run
    r = copy.deepcopy(results)
    r["stages"]["linear_probe"]["weight_decay"] = 1e-06
    html = write_report(r, tmp_path / "report.html").read_text()
    section = html.split('id="linear_probe"', 1)[1].split("</section>", 1)[0]
    assert "lp_acc1" not in section and "acc@1" in section
    assert "1e-06" in section and "weight decay" in section
    assert H.fmt_cell(1e-06) == "1e-06" and H.fmt_cell(0.0) == "0.000" and H.fmt_cell(0.1234) == "0.123"


def test_run_table_lists_few_shot_settings_only_when_it_ran(small_run, tmp_path):
    from cliplab.bench.report import write_report

    _, results = small_run
    html = write_report(results, tmp_path / "a.html").read_text()
    assert "few-shot" not in html.split('id="overview"', 1)[1].split("</section>", 1)[0]
    r = copy.deepcopy(results)
    r["stages"]["adapt"] = {"skipped": "a class has no training image"}
    html = write_report(r, tmp_path / "b.html").read_text()
    assert "shots 1, 2, 4, 8, 16; seeds 1, 2, 3" in html


# -- 4. templates ---------------------------------------------------------------------------------------------
def test_templates_are_recorded_and_the_fallback_is_noticed(tmp_path, caplog):
    from cliplab.bench.report import write_report
    from cliplab.data import load_dataset
    from cliplab.zeroshot import zeroshot_evaluate

    folder = write_shapes_folder(tmp_path / "images", 24, seed=0)
    model = make_tiny_model()
    logged = []
    res = run_bench(model, str(folder), tmp_path / "out", only=["zeroshot"], cache_dir=False, progress=False,
                    log=logged.append)  # fmt: skip
    (name, record), *_ = res["templates"].items()
    assert record == {"source": "fallback", "name": "simple", "count": 1, "examples": ["a photo of a {}."]}
    assert res["stages"]["zeroshot"]["classes"]["templates"] == record
    notices = [m for m in logged if "no prompt templates" in m]
    assert len(notices) == 1 and name in notices[0] and "a photo of a {}." in notices[0]
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["templates"][name]["source"] == "fallback"
    html = (tmp_path / "out" / "report.html").read_text()
    assert "fallback: no templates of its own" in html

    given = run_bench(model, str(folder), tmp_path / "given", only=["zeroshot"], cache_dir=False, progress=False,
                      templates=["a drawing of a {}.", "a {}."])  # fmt: skip
    assert given["templates"][name]["source"] == "given" and given["templates"][name]["count"] == 2
    builtin = run_bench(model, "shapes:image_size=32", tmp_path / "b", n=20, only=["zeroshot"], cache_dir=False,
                        progress=False)  # fmt: skip
    assert {r["source"] for r in builtin["templates"].values()} == {"dataset"}
    write_report(builtin, tmp_path / "b.html")

    with caplog.at_level(logging.INFO, logger="cliplab"):
        report = zeroshot_evaluate(model, load_dataset(str(folder)), cache_dir=False, progress=False)
    assert report["templates"]["source"] == "fallback"
    assert any("no prompt templates" in r.getMessage() for r in caplog.records)


def test_cli_zeroshot_json_records_templates_and_logs_the_notice(tiny_model_dir, tmp_path, capsys, caplog):
    from cliplab.cli.commands import main

    folder = write_shapes_folder(tmp_path / "images", 12, seed=0)
    with caplog.at_level(logging.INFO, logger="cliplab"):
        assert main(["zeroshot", str(tiny_model_dir), str(folder), "--json", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["templates"]["source"] == "fallback"  # stdout is pure JSON: the notice is a log line
    assert any("no prompt templates" in r.getMessage() for r in caplog.records)


# -- 5. skipped images ----------------------------------------------------------------------------------------
def test_report_lists_skipped_images(small_run, tmp_path):
    from cliplab.bench.report import write_report

    _, results = small_run
    html = write_report(results, tmp_path / "none.html").read_text()
    assert "skipped-images" not in html  # absent key: no note
    r = copy.deepcopy(results)
    r["skipped_images"] = [{"file": f"bad/{i}.png", "error": "cannot identify image file"} for i in range(25)]
    html = write_report(r, tmp_path / "some.html").read_text()
    note = html.split('id="skipped-images"', 1)[1].split("</div>", 1)[0]
    assert "25 images could not be read" in note and "bad/0.png" in note and "cannot identify image file" in note
    assert "bad/24.png" not in note and "and 5 more" in note


def test_cli_summary_reads_in_memory_results_as_results_json_holds_them(capsys):
    """The run's in-memory results key few-shot accuracies by int shots; results.json by strings. The summary
    must show the few-shot headline either way (it was missing from `cliplab bench`'s summary)."""
    from cliplab.cli.bench import print_summary

    adapt = {"results": {"gda": {16: {"mean": 0.55}}}, "shots": [16], "zeroshot": 0.22, "task": "pattern"}
    results = {"stages": {"adapt": adapt}, "data": {"spec": "shapes", "kind": "built-in world"}, "timings": {}}
    print_summary(results)
    out = capsys.readouterr().out
    assert "best 16-shot accuracy" in out and "GDA" in out


def test_log_messages_during_a_display_stand_on_lines_of_their_own():
    """A logging record written while the status line is shown (e.g. "features cache hit") must not be glued to
    the end of the line: the line is erased, the message written, and the line drawn again below it."""
    import logging

    from cliplab.progress import display, step

    stream = FakeTerminal()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with display(stream=stream, stages=1) as shown, shown.stage("zeroshot", []), step("tasks", 2):
            shown.refresh(force=True)
            logging.getLogger("cliplab.test").warning("features cache hit: x")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    at = text.index("features cache hit: x")
    assert text[:at].endswith("\r\x1b[K")  # the status line was erased first
    assert "stage 1/1 zeroshot" in text[at:]  # and drawn again after the message
    assert handler.stream is stream  # the handler writes to its own stream again
