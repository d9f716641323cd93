"""``text3d batch FILE [FILE...]``: a thin shell over :func:`text3d.batch.runner.run_batch`.

Exit codes: 0 every line parsed and every prompt completed (now or before); 1 some line was bad or some prompt
failed (see ``summary.json``); 2 a user error before anything ran (missing file, bad flag, model not found);
130 interrupted (re-running the same command resumes).
"""

from __future__ import annotations

import argparse
import sys

EXIT_SOME_FAILED = 1
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Generate every prompt of one or more prompt files, loading the model once.

File format: one prompt per line; blank lines and lines starting with # are ignored; per-line settings follow
' | ', e.g.  a red fox | seed=3 coarse-steps=5000 . Files ending in .jsonl hold one JSON object per line,
e.g. {"prompt": "a red fox", "seed": 3}. Bad lines are reported with their line numbers and skipped.

Each prompt runs in <out>/<prompt>-<hash>/, the hash taken over what defines its result (prompt, negative
prompt, seed, settings), not its line: re-running skips finished prompts and resumes half-finished ones, even
after lines were added, moved or the file renamed. A line repeating an earlier one runs once. The summary is
<out>/summary.json, summary.csv and index.html.
Scale out with:  accelerate launch [--cpu] --num_processes N -m text3d batch FILE ...
"""


def add_batch_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``batch`` with the generate knobs (they become every prompt's defaults)."""
    from text3d.cli import add_run_options

    p = sub.add_parser(
        "batch",
        help="generate every prompt of prompt files (one model load; resumable; accelerate-shardable)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="prompt files (.txt or .jsonl)")
    add_run_options(p)
    p.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    from text3d.batch.promptfile import parse_prompt_files
    from text3d.batch.runner import (
        BatchProgress,
        default_batch_out,
        process_state,
        require_prompts,
        run_batch,
    )
    from text3d.cli import config_from_args

    base = config_from_args(args, None)
    out = args.out if args.out else default_batch_out(base.out_dir, args.files)
    parsed = parse_prompt_files(args.files, base)
    require_prompts(parsed, args.files)
    state = process_state()
    main = state.is_main_process
    tag = f"[{state.process_index}/{state.num_processes}] " if state.num_processes > 1 else ""
    if main:
        for issue in parsed.errors:
            print(f"error: {issue} (line skipped)", file=sys.stderr)
        for issue in parsed.warnings:
            print(f"warning: {issue}", file=sys.stderr)
        print(
            f"batch: {len(parsed.items)} prompt(s) from {len(args.files)} file(s) into {out}"
            + (f" over {state.num_processes} processes" if state.num_processes > 1 else ""),
            flush=True,
        )

    def on_progress(p: BatchProgress) -> None:
        where = f"{p.item.file}:{p.item.line} {p.item.prompt[:60]!r}"
        r = p.result
        if r is None:
            print(f"{tag}[{p.text()}] starting {where}", flush=True)
            return
        took = f" in {r.seconds:.1f} s" if r.seconds else ""
        why = f": {r.error}" if r.error else ""
        print(f"{tag}[{p.done} / {p.total}] {r.status:<9} {where}{took}{why}", flush=True)

    try:
        result = run_batch(args.files, base, out, on_progress=on_progress, state=state, parsed=parsed)
    except KeyboardInterrupt:
        print(f"{tag}interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if main:
        counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result.counts.items() if v)
        print(f"batch done: {counts}; see {result.out_dir / 'index.html'}", flush=True)
    return 0 if result.ok else EXIT_SOME_FAILED
