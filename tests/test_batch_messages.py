"""Batch messages that name where (issue 12, item 8): UTF-16 prompt files, truncated prompts as ``file:line``."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from text3d.batch.promptfile import parse_prompt_file
from text3d.errors import PromptFileError, PromptTruncatedWarning

LINES = '# a comment\na red fox\na ceramic owl mug | seed=3 negative="blurry, dark"\nun café crème\n'


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_file_with_a_byte_order_mark_reads_like_its_utf8_twin(tmp_path, encoding):
    twin = tmp_path / "utf8.txt"
    twin.write_text(LINES, encoding="utf-8")
    path = tmp_path / "utf16.txt"
    bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[encoding]
    path.write_bytes(bom + LINES.replace("\n", "\r\n").encode(encoding))  # as Notepad saves it
    parsed, expected = parse_prompt_file(path), parse_prompt_file(twin)
    assert parsed.errors == [] and parsed.warnings == []
    got = [(i.line, i.prompt, i.overrides) for i in parsed.items]
    assert got == [(i.line, i.prompt, i.overrides) for i in expected.items]
    assert got[1] == (3, "a ceramic owl mug", {"seed": "3", "negative": "blurry, dark"})


def test_utf16_without_a_byte_order_mark_is_refused_in_one_line(tmp_path, capsys):
    from text3d.cli import main

    path = tmp_path / "nobom.txt"
    path.write_bytes(LINES.encode("utf-16-le"))
    with pytest.raises(PromptFileError, match=r"nobom\.txt is UTF-16: save it as UTF-8$"):
        parse_prompt_file(path)
    assert main(["batch", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: prompt file {path} is UTF-16: save it as UTF-8"], err
    assert not (tmp_path / "out").exists()


def test_a_truncated_prompt_is_reported_as_file_line_in_the_warning_and_the_summary(
    make_config, tiny_guidance, tmp_path
):
    from text3d.batch.runner import run_batch

    long = "a very detailed " + "ornate " * 90 + "teapot"
    pfile = tmp_path / "long.txt"
    pfile.write_text(f"# header\na short mug\n{long}\n", encoding="utf-8")
    base = make_config("", coarse__steps="2", refine__steps="0", trainer__video_frames="1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_batch([pfile], base, tmp_path / "out", guidance=tiny_guidance)
    finally:
        torch.set_num_threads(threads)
    assert result.ok, [r.error for r in result.items]
    truncated = [str(w.message) for w in caught if issubclass(w.category, PromptTruncatedWarning)]
    assert len(truncated) == 1, truncated  # once, with where it came from, not again from inside the run
    assert truncated[0].startswith(f"{pfile}:3: the prompt is "), truncated
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert any(w.startswith(f"{pfile}:3: the prompt is ") for w in map(str, _warnings(summary))), summary


def _warnings(summary: dict) -> list:
    found = summary.get("warnings", [])
    return [f"{w['file']}:{w['line']}: {w['message']}" if isinstance(w, dict) else str(w) for w in found]


def test_web_app_examples_read_utf16_prompt_files_too(tmp_path):
    from text3d.app.runs import example_prompts

    (tmp_path / "win.txt").write_bytes(b"\xff\xfe" + LINES.replace("\n", "\r\n").encode("utf-16-le"))
    assert example_prompts(tmp_path) == {"win": ["a red fox", "a ceramic owl mug", "un café crème"]}
