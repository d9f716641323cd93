"""Batch mode (issue 6): prompt files, one model load, skip/resume, failure isolation, sharding, summary.

Everything runs the tiny random SD on CPU with a few steps at 16 px (``FAST`` on top of the shared
``TINY_OVERRIDES`` through ``make_config``). Subprocess tests write that config to a YAML file and pass
``--config``, exactly as a user would.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from text3d.batch.promptfile import MAX_LINE_CHARS, parse_prompt_file, parse_prompt_files, run_key
from text3d.batch.runner import run_batch
from text3d.config import GenerateConfig, apply_overrides, save_config
from text3d.pipeline import stage_progress

REPO = Path(__file__).resolve().parents[1]
STEPS = 4
FAST = {
    "coarse.steps": str(STEPS),
    "coarse.resolution": "16",
    "coarse.renderer.n_samples": "16",
    "coarse.occupancy.resolution": "16",
    "coarse.shading.albedo_only_steps": "2",
    "refine.steps": "0",  # step counts below are the coarse stage's alone
    "trainer.log_every": "1",
    "trainer.preview_every": "2",
    "trainer.checkpoint_every": "2",
    "trainer.preview_views": "1",
    "trainer.video_frames": "1",
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine extra threads spin: one run took
    14 s with the default threads and 0.9 s with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def base(make_config) -> GenerateConfig:
    """The batch-wide settings: tiny model, tiny and fast run."""
    return make_config("", **{k.replace(".", "__"): v for k, v in FAST.items()})


@pytest.fixture
def config_yaml(base, tmp_path) -> Path:
    return save_config(base, tmp_path / "tiny.yaml")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("name", ["objects.txt", "animals.txt", "food.txt", "vehicles.txt"])
def test_curated_prompt_files_parse_cleanly(name):
    path = REPO / "prompts" / name
    parsed = parse_prompt_file(path)
    assert parsed.errors == [] and parsed.warnings == []
    assert 8 <= len(parsed.items) <= 12
    assert len({i.prompt for i in parsed.items}) == len(parsed.items)
    assert path.read_text(encoding="utf-8").startswith("# "), "each file starts with a header comment"
    assert len({i.key for i in parsed.items}) == len(parsed.items)


def test_text_and_jsonl_formats(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_bytes(
        b"\xef\xbb\xbf# header\r\n\r\n  a red fox  \r\n"
        b'a blue vase | seed=3 coarse-steps=50 negative="blurry, dark" coarse.sds.guidance_scale=7.5\n'
        b"   # indented comment\n"
        b"a wide | bar sign | seed=4\n"
    )
    parsed = parse_prompt_file(txt)
    fox, vase = parsed.items
    assert (fox.line, fox.prompt, fox.overrides) == (3, "a red fox", {})
    assert vase.line == 4 and vase.prompt == "a blue vase"
    assert vase.cfg.seed == 3 and vase.cfg.coarse.steps == 50
    assert vase.cfg.negative_prompt == "blurry, dark" and vase.cfg.coarse.sds.guidance_scale == 7.5
    # the first " | " splits, so a prompt can't contain one (documented): that line is reported, not guessed at
    assert [(e.line, e.message) for e in parsed.errors] == [(6, "expected key=value after ' | ', got 'bar'")]
    assert parsed.items[0].cfg.seed == GenerateConfig().seed

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"prompt": "a red fox", "seed": 7, "coarse-steps": 20}\n'
        "# comment\n"
        '{"prompt": "an owl", "perp-neg": true}\n'
        '["not", "an", "object"]\n'
        '{"seed": 1}\n'
        '{"prompt": "x", "coarse": {"steps": 3}}\n'
        "{broken\n",
        encoding="utf-8",
    )
    parsed = parse_prompt_file(jsonl)
    assert [(i.line, i.prompt, i.cfg.seed) for i in parsed.items] == [(1, "a red fox", 7), (3, "an owl", 0)]
    assert parsed.items[0].cfg.coarse.steps == 20 and parsed.items[1].cfg.coarse.sds.perp_neg is True
    assert [e.line for e in parsed.errors] == [4, 5, 6, 7]


def test_bad_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(
        b"a good apple\n"  # 1
        b"a fox | colour=red\n"  # 2 unknown key
        b"a fox | seed=abc\n"  # 3 non-numeric seed
        b"\xff\xfe caf\xe9\n" + b"a" * 10_000 + b"\n"  # 4 not UTF-8  # 5 too long
        b"| seed=3\n"  # 6 empty prompt
        b"a fox | model=other/model\n"  # 7 batch-wide setting
        b"a fox | seed\n"  # 8 not key=value
        b'a fox | negative="unclosed\n'  # 9 bad quoting
        b"a fox | coarse.nope=1\n"  # 10 unknown nested key
        b"a \x07 bell\n"  # 11 control character
        b"../../x\n"  # 12 runs, with a warning
    )
    parsed = parse_prompt_file(path)
    by_line = {e.line: e.message for e in parsed.errors}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "unknown key 'colour'" in by_line[2]
    assert "seed" in by_line[3] and "integer" in by_line[3]
    assert "UTF-8" in by_line[4]
    assert f"limit is {MAX_LINE_CHARS}" in by_line[5] and "10000" in by_line[5]
    assert "empty prompt" in by_line[6]
    assert "--model" in by_line[7]
    assert all("\n" not in m for m in by_line.values())
    assert str(parsed.errors[0]).startswith(f"{path}:2: ")
    assert [i.line for i in parsed.items] == [1, 12]
    assert [w.line for w in parsed.warnings] == [12]


def test_run_keys_are_deterministic_and_safe(tmp_path):
    base = GenerateConfig()
    for prompt in ("../../x", "/etc/passwd", "..", "C:\\Windows\\x", "~/.ssh/id_rsa", "日本語", "a\x00b"):
        key = run_key(dataclasses.replace(base, prompt=prompt))
        assert set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") and ".." not in key
    fox = dataclasses.replace(base, prompt="a fox")
    assert run_key(fox) == run_key(dataclasses.replace(fox))
    assert run_key(fox) != run_key(dataclasses.replace(fox, seed=1))
    assert run_key(fox) != run_key(dataclasses.replace(fox, negative_prompt="blurry"))
    assert run_key(fox) != run_key(apply_overrides(fox, {"coarse-steps": "7"}))
    # where it runs and how often it reports do not define the result
    assert run_key(fox) == run_key(apply_overrides(fox, {"device": "cpu", "out_dir": "elsewhere"}))
    assert run_key(fox) == run_key(apply_overrides(fox, {"trainer.preview_every": "3"}))
    # identical lines (in one file or across files) run once and are reported as duplicates
    f = _write_lines(tmp_path / "p.txt", ["a fox", "a fox | seed=0", "a fox | seed=1"])
    parsed = parse_prompt_files([f, f])
    assert [i.line for i in parsed.items] == [1, 3]
    dupes = [str(w) for w in parsed.warnings]
    assert dupes == [f"{f}:2: duplicate of {f}:1 (same prompt and settings); it runs once"] + [
        f"{f}:{n}: duplicate of {f}:{m} (same prompt and settings); it runs once"
        for n, m in ((1, 1), (2, 1), (3, 3))
    ]


def test_run_folder_names_are_cut_at_word_boundaries():
    prompt = "a ceramic owl mug with extraordinarily intricate hand painted patterns"
    key = run_key(dataclasses.replace(GenerateConfig(), prompt=prompt))
    slug, digest = key.rsplit("-", 1)
    assert len(digest) >= 10 and len(slug) <= 40
    assert slug == "a-ceramic-owl-mug-with-extraordinarily", "no word is cut in half"
    one_word = run_key(dataclasses.replace(GenerateConfig(), prompt="x" * 90)).rsplit("-", 1)[0]
    assert one_word == "x" * 40, "a single long word is cut where it must be"


# ---------------------------------------------------------------------------------------------------- running
def test_batch_runs_then_rerun_skips_everything(base, tmp_path, tiny_model_dir, monkeypatch):
    """Acceptance (a): 6 prompts complete with one model load; a re-run skips all 6 and trains nothing."""
    import text3d.batch.runner as runner
    from text3d.pipeline import load_guidance

    loads = []

    def counting_load(cfg, device=None):
        loads.append(load_guidance(cfg, device))
        return loads[-1]

    monkeypatch.setattr(runner, "load_guidance", counting_load)
    prompts = ["a red apple", "a blue vase", "an owl mug", "a red owl", "a blue mug", "a vase | seed=5"]
    pfile = _write_lines(tmp_path / "six.txt", ["# six prompts", *prompts])
    out = tmp_path / "out"

    t0 = time.perf_counter()
    first = run_batch([pfile], base, out)
    first_s = time.perf_counter() - t0
    assert first.ok and [r.status for r in first.items] == ["completed"] * 6
    assert len(loads) == 1, "the model is loaded once for the whole batch"
    assert loads[0].text_encoder is None, "every prompt was encoded up front, then the encoder freed"
    assert all(r.steps == STEPS for r in first.items)
    keys = [r.key for r in first.items]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(keys)
    for r in first.items:
        assert _read(out / r.key / "run.json")["status"] == "completed"
        assert (out / r.thumbnail).is_file() and r.thumbnail == f"{r.key}/previews/latest.png"
    assert _read(out / keys[5] / "run.json")["seed"] == 5
    before = {k: (out / k / "run.json").read_bytes() + (out / k / "metrics.jsonl").read_bytes() for k in keys}
    written = {p: p.stat().st_mtime_ns for k in keys for p in (out / k).rglob("*")}

    t0 = time.perf_counter()
    second = run_batch([pfile], base, out)
    second_s = time.perf_counter() - t0
    print(f"first run {first_s:.2f} s, re-run {second_s:.3f} s")
    assert second.ok and [r.status for r in second.items] == ["skipped"] * 6
    assert all(r.steps == 0 for r in second.items), "no training step ran on the re-run"
    assert len(loads) == 1, "nothing to do: the model is not even loaded"
    assert {
        k: (out / k / "run.json").read_bytes() + (out / k / "metrics.jsonl").read_bytes() for k in keys
    } == before
    # Nothing in a finished run folder is written again (no re-export, no new video); its speed is not asserted.
    assert {p: p.stat().st_mtime_ns for k in keys for p in (out / k).rglob("*")} == written

    summary = _read(out / "summary.json")
    assert summary["final"] and summary["ok"] and summary["counts"]["skipped"] == 6
    assert [(i["line"], i["status"]) for i in summary["items"]] == [(n, "skipped") for n in range(2, 8)]
    rows = list(csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
    assert [r["prompt"] for r in rows] == [p.split(" | ")[0] for p in prompts]
    page = (out / "index.html").read_text(encoding="utf-8")
    for r in first.items:
        assert f'src="{r.thumbnail}"' in page
    assert not list(out.glob("**/.*.tmp*")), "atomic writes leave no temporary files"


def test_failing_prompts_are_recorded_and_the_batch_carries_on(base, tmp_path, tiny_guidance, monkeypatch):
    """A NaN (a real one: lr=1e38 overflows the field) and an out-of-memory error fail their prompt only; exit status says so."""
    import text3d.batch.runner as runner

    real_generate = runner.generate

    def generate(cfg, **kw):
        if cfg.prompt.startswith("a huge"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_generate(cfg, **kw)

    monkeypatch.setattr(runner, "generate", generate)
    pfile = _write_lines(
        tmp_path / "mixed.txt",
        [
            "a red apple | coarse.optim.lr=1e38",
            "a huge blue vase",
            "an owl mug",
            "<b>a bold</b> & 'quoted' mug",
        ],
    )
    seen = []
    result = run_batch([pfile], base, tmp_path / "out", guidance=tiny_guidance, on_item=seen.append)
    assert [r.status for r in result.items] == ["failed", "failed", "completed", "completed"]
    assert not result.ok and [r.line for r in seen] == [1, 2, 3, 4]
    assert result.items[0].error.startswith("FloatingPointError: coarse loss became nan")
    assert result.items[1].error.startswith("out of memory")
    assert _read(tmp_path / "out" / result.items[0].key / "run.json")["status"] == "failed"
    log = _read(tmp_path / "out" / result.items[0].key / "batch.json")
    assert log["line"] == 1 and log["attempts"][-1]["status"] == "failed"
    summary = _read(tmp_path / "out" / "summary.json")
    assert summary["counts"] == {"failed": 2, "completed": 2, "bad_lines": 0} and not summary["ok"]
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "<b>a bold</b>" not in page and "&lt;b&gt;a bold&lt;/b&gt; &amp;" in page


def test_cancel_stops_the_batch_and_a_rerun_resumes_from_the_checkpoint(base, tmp_path, tiny_guidance):
    from text3d.errors import Cancelled

    pfile = _write_lines(tmp_path / "three.txt", ["a red apple", "a blue vase", "an owl mug"])
    out = tmp_path / "out"

    finished = []

    def cancel_second_item_at_step_3(progress):
        if len(finished) == 1 and progress.step == 3:
            raise Cancelled()

    result = run_batch(
        [pfile],
        base,
        out,
        guidance=tiny_guidance,
        callback=cancel_second_item_at_step_3,
        on_item=finished.append,
    )
    assert [r.status for r in result.items] == ["completed", "cancelled", "not-run"]
    key = result.items[1].key
    assert stage_progress(out / key, "coarse") == 3, "cancel checkpointed the step it stopped at"
    assert not (out / result.items[2].key).exists()

    again = run_batch([pfile], base, out, guidance=tiny_guidance)
    assert [r.status for r in again.items] == ["skipped", "completed", "completed"]
    assert [r.steps for r in again.items] == [0, STEPS - 3, STEPS]
    attempts = _read(out / key / "batch.json")["attempts"]
    assert [a["status"] for a in attempts] == ["cancelled", "completed"]
    assert attempts[1]["resumed_from"] == {"coarse": 3}


def test_editing_reordering_or_renaming_the_file_reruns_only_what_changed(base, tmp_path, tiny_guidance):
    """Acceptance (d): a comment line at the top, two swapped lines and a new file name run nothing new; a new
    seed on one line re-runs that line only; a repeated line runs once and is reported."""
    lines = ["a red apple", "a blue vase | seed=2", "an owl mug"]
    out = tmp_path / "out"
    first = run_batch([_write_lines(tmp_path / "a.txt", lines)], base, out, guidance=tiny_guidance)
    assert [r.status for r in first.items] == ["completed"] * 3
    keys = {r.prompt: r.key for r in first.items}

    edited = _write_lines(
        tmp_path / "renamed.txt", ["# a new comment at the top", lines[2], lines[1], lines[0]]
    )
    again = run_batch([edited], base, out, guidance=tiny_guidance)
    assert [r.status for r in again.items] == ["skipped"] * 3
    assert {r.prompt: r.key for r in again.items} == keys and [r.line for r in again.items] == [2, 3, 4]

    _write_lines(edited, ["# a new comment at the top", lines[2], "a blue vase | seed=3", lines[0], lines[0]])
    third = run_batch([edited], base, out, guidance=tiny_guidance)
    assert [(r.prompt, r.status) for r in third.items] == [
        ("an owl mug", "skipped"),
        ("a blue vase", "completed"),
        ("a red apple", "skipped"),
    ]
    assert third.items[1].key != keys["a blue vase"] and third.items[1].steps == STEPS
    assert [str(w) for w in third.warnings] == [
        f"{edited}:5: duplicate of {edited}:4 (same prompt and settings); it runs once"
    ]
    assert len([p for p in out.iterdir() if p.is_dir()]) == 4


class _TooManyEncoded(BaseException):
    """Not an ``Exception``: the batch must not record it as one prompt's failure and carry on."""


def test_a_20000_line_batch_starts_before_encoding_its_prompts(base, tmp_path, tiny_guidance, monkeypatch):
    """Acceptance (c) as behaviour: the first training step comes before more than a chunk of prompts has been
    encoded, so start-up time and memory do not grow with the file (bench/batch_start_bench.py times it)."""
    from text3d.batch.runner import ENCODE_CHUNK
    from text3d.errors import Cancelled

    pfile = _write_lines(tmp_path / "many.txt", [f"a red apple number {i}" for i in range(20_000)])
    encoded: list[str] = []
    real_prepare = tiny_guidance.prepare_text

    def counting_prepare(prompt, negative_prompt="", warn=True):
        encoded.append(prompt)
        if len(encoded) > 64:
            raise _TooManyEncoded(f"{len(encoded)} prompts encoded and no prompt has started")
        return real_prepare(prompt, negative_prompt, warn)

    monkeypatch.setattr(tiny_guidance, "prepare_text", counting_prepare)
    first_step = []

    def stop_at_the_first_step(progress):
        first_step.append(len(encoded))
        raise Cancelled()

    events = []
    result = run_batch(
        [pfile],
        base,
        tmp_path / "out",
        guidance=tiny_guidance,
        callback=stop_at_the_first_step,
        on_progress=events.append,
    )
    assert first_step and first_step[0] <= ENCODE_CHUNK + 1
    assert [r.status for r in result.items[:3]] == ["cancelled", "not-run", "not-run"]
    assert len(result.items) == 20_000
    start = events[0]
    assert (start.done, start.total, start.item.line, start.result) == (0, 20_000, 1, None)
    assert start.text().startswith("1 / 20000")


# ---------------------------------------------------------------------------------------------------- CLI
def _snapshot(root: Path) -> tuple[set[str], dict[str, tuple[float, int]]]:
    """Every path under ``root``, and each file's (mtime, size)."""
    paths = set(root.rglob("*"))
    return {str(p) for p in paths}, {
        str(p): (p.stat().st_mtime, p.stat().st_size) for p in paths if p.is_file()
    }


def test_cli_bad_lines_and_nothing_written_outside_out(tmp_path, config_yaml):
    """Acceptance (b): bad lines reported by line number, good prompts complete, nothing written outside --out."""
    sandbox = tmp_path / "sandbox"
    work = sandbox / "work"
    work.mkdir(parents=True)
    out = sandbox / "a" / "b" / "out"
    escape = sandbox / "escaped"
    pfile = sandbox / "mixed.txt"
    pfile.write_bytes(
        b"# good lines mixed with malformed ones\n"  # 1
        b"a red apple\n"  # 2 good
        b"a blue vase | colour=blue\n"  # 3 unknown override key
        b"an owl mug | seed=abc\n"  # 4 non-numeric seed
        b"a \xff\xfe broken \x80 line\n" + b"a" * 10_000 + b"\n"  # 5 invalid UTF-8  # 6 10,000 characters
        b"../../x\n"  # 7 path-like prompt: runs as text, inside --out
        b"/etc/passwd\n"  # 8 idem
         + str(escape).encode() + b"\n"  # 9 an absolute path inside the sandbox
    )
    paths_before, files_before = _snapshot(tmp_path)
    passwd = Path("/etc/passwd").stat().st_mtime
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "text3d",
            "batch",
            str(pfile),
            "--config",
            str(config_yaml),
            "--out",
            str(out),
        ],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for line, what in ((3, "unknown key 'colour'"), (4, "seed"), (5, "UTF-8"), (6, "10000 characters")):
        assert f"error: {pfile}:{line}: " in proc.stderr and what in proc.stderr
    summary = _read(out / "summary.json")
    assert {e["line"] for e in summary["bad_lines"]} == {3, 4, 5, 6}
    assert {w["line"] for w in summary["warnings"]} == {7, 8, 9}
    assert [(i["line"], i["status"]) for i in summary["items"]] == [(n, "completed") for n in (2, 7, 8, 9)]

    paths_after, files_after = _snapshot(tmp_path)
    new_outside = sorted(p for p in paths_after - paths_before if not Path(p).is_relative_to(out))
    assert new_outside == [str(sandbox / "a"), str(sandbox / "a" / "b")], (
        "only --out's parent folders are new"
    )
    assert {p: files_after.get(p) for p in files_before} == files_before, "no file outside --out changed"
    assert not escape.exists() and not (sandbox / "a" / "x").exists() and not (sandbox / "x").exists()
    assert list(work.iterdir()) == [], "nothing is written to the working directory"
    assert Path("/etc/passwd").stat().st_mtime == passwd
    assert all(Path(i["key"]).name == i["key"] for i in summary["items"])


def test_cli_user_errors_are_one_line_with_exit_code_2(tmp_path, config_yaml, capsys, monkeypatch):
    from text3d.cli import main

    monkeypatch.chdir(tmp_path)
    only_comments = _write_lines(tmp_path / "empty.txt", ["# nothing here yet", ""])
    cases = [
        (["batch", "missing.txt"], "prompt file missing.txt does not exist"),
        (["batch", str(tmp_path)], "is a folder"),
        (["batch", str(only_comments), "--config", str(config_yaml)], "no prompts in"),
        (["batch", str(only_comments), "--set", "coarse.nope=1"], "unknown setting 'nope'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "tiny.yaml"], "nothing was written"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["cpu-mpi", "torchrun"])
def test_accelerate_two_cpu_processes_shard_without_duplicates_or_gaps(tmp_path, base, config_yaml, launcher):
    """Acceptance (c): two accelerate processes on CPU split 8 prompts with no duplicates and no gaps.

    accelerate 1.x starts several CPU processes only through MPI: ``--cpu --num_processes 2 --mpirun_hostfile F``
    (``.ci/run`` installs Debian's mpich); plain ``--cpu --num_processes 2`` starts one. ``--multi_gpu`` launches
    through torchrun, and with no GPU visible ``process_state`` makes the processes a gloo group on CPU: the same
    code path as N GPUs with nccl. Both are run.
    """
    words = ["apple", "vase", "owl", "mug", "red owl", "blue vase", "red mug", "blue apple"]
    pfile = _write_lines(tmp_path / "eight.txt", [f"a {w}" for w in words])
    out = tmp_path / "out"
    if launcher == "cpu-mpi":
        assert shutil.which("mpirun"), "mpirun is missing: apt-get install mpich (.ci/run does)"
        hostfile = tmp_path / "hostfile"
        hostfile.write_text("localhost\n")
        how = ["--cpu", "--mpirun_hostfile", str(hostfile)]
    else:
        how = ["--multi_gpu"]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", *how,
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "text3d", "batch", str(pfile), "--config", str(config_yaml), "--out", str(out),
    ]  # fmt: skip
    env = {**_env(), "CUDA_VISIBLE_DEVICES": ""}  # CPU processes even where the test machine has GPUs
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "over 2 processes" in proc.stdout and "[1/2] [4 / 4] completed" in proc.stdout

    expected = parse_prompt_file(pfile, base).items  # folder names depend on the settings too
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted(i.key for i in expected), "every prompt exactly once, nothing else"
    made_by = {}
    for index, item in enumerate(expected):
        attempts = _read(out / item.key / "batch.json")["attempts"]
        assert (
            len(attempts) == 1 and attempts[0]["status"] == "completed" and attempts[0]["num_processes"] == 2
        )
        assert _read(out / item.key / "run.json")["status"] == "completed"
        made_by[item.line] = attempts[0]["process_index"]
        assert made_by[item.line] == index % 2
    print("process per line:", made_by)
    summary = _read(out / "summary.json")
    assert summary["ok"] and summary["num_processes"] == 2 and summary["counts"]["completed"] == 8
    assert {i["line"]: i["made_by"] for i in summary["items"]} == made_by
    assert len({a["invocation"] for k in folders for a in _read(out / k / "batch.json")["attempts"]}) == 1


@pytest.mark.slow
def test_sigkill_mid_batch_then_rerun_finishes_the_rest(tmp_path, base, config_yaml):
    """Acceptance (d): a batch killed with SIGKILL, re-run, finishes without redoing finished prompts."""
    pfile = _write_lines(
        tmp_path / "six.txt",
        ["a red apple", "a blue vase", "an owl mug", "a red owl", "a blue mug", "a vase"],
    )
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "text3d",
        "batch",
        str(pfile),
        "--config",
        str(config_yaml),
        "--out",
        str(out),
    ]
    items = parse_prompt_file(pfile, base).items

    def completed() -> list[str]:
        done = []
        for item in items:
            try:
                if _read(out / item.key / "run.json")["status"] == "completed":
                    done.append(item.key)
            except (OSError, ValueError):
                pass
        return done

    def half_finished() -> bool:
        """Some prompt has a checkpoint but is not completed: the best moment for the kill."""
        done = completed()
        return any(
            (out / i.key / "checkpoints" / "coarse.safetensors").exists() for i in items if i.key not in done
        )

    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        n = len(completed())
        if (n >= 2 and half_finished()) or n >= 4:  # mid-prompt if we catch it, else between prompts
            break
        time.sleep(0.01)
    assert proc.poll() is None, (
        "the batch ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_first = completed()
    assert 2 <= len(done_first) < len(items)
    first_inv = _read(out / done_first[0] / "batch.json")["attempts"][0]["invocation"]
    frozen = {
        k: (out / k / "run.json").read_bytes() + (out / k / "metrics.jsonl").read_bytes() for k in done_first
    }
    progress = {i.key: stage_progress(out / i.key, "coarse") for i in items if i.key not in done_first}
    assert _read(out / "summary.json")["final"] is False, "the running summary was there when it died"

    rerun = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(completed()) == sorted(i.key for i in items)
    for key in done_first:
        attempts = _read(out / key / "batch.json")["attempts"]
        # one attempt, from the killed run ("running" if the kill landed between run.json and batch.json)
        assert [a["invocation"] for a in attempts] == [first_inv]
        assert attempts[0]["status"] in ("completed", "running")
        assert (out / key / "run.json").read_bytes() + (out / key / "metrics.jsonl").read_bytes() == frozen[
            key
        ]
    for key, step in progress.items():
        last = _read(out / key / "batch.json")["attempts"][-1]
        assert last["invocation"] != first_inv and last["status"] == "completed"
        assert last["steps"] == STEPS - step, f"{key} resumed from its checkpoint at step {step}"
    summary = _read(out / "summary.json")
    assert summary["final"] and summary["ok"]
    assert sorted(i["status"] for i in summary["items"]) == sorted(
        ["skipped"] * len(done_first) + ["completed"] * (len(items) - len(done_first))
    )
    print(f"killed after {len(done_first)} completed; checkpoints of the rest at kill time: {progress}")
