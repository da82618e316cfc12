"""Every example line of every `--help` epilogue runs (tests/docs_runner.py: tiny budget, scratch directory)."""

from __future__ import annotations

import argparse

from docs_runner import command_of, needs_gpu, run_command, scratch

from graphdl.cli import make_parser

PLACEHOLDERS = {"SPEC", "DIR", "FILE", "PT", "PATH", "CHECKPOINT", "N", "FAMILY"}


def _epilogs() -> list[tuple[str, str]]:
    """``(command path, epilog)`` of the top-level parser and every subcommand, in registration order."""
    out = []

    def walk(p: argparse.ArgumentParser, name: str) -> None:
        if p.epilog:
            out.append((name, p.epilog))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub_name, sub in dict.fromkeys(a.choices.items()):
                    walk(sub, f"{name} {sub_name}".strip())

    walk(make_parser(), "")
    return out


def test_every_subcommand_has_examples():
    names = {n for n, _ in _epilogs()}
    assert {"", "check", "describe", "schema", "run", "predict", "verify", "bench"} <= names


def test_help_examples_run(tmp_path):
    cwd = scratch(tmp_path)
    ran = []
    for name, epilog in _epilogs():
        for line in epilog.splitlines():
            if not line.startswith("  graphdl "):
                continue
            cmd = command_of(line)
            assert not set(cmd.split()) & PLACEHOLDERS, \
                f"`graphdl {name} --help` example has a placeholder: {cmd}"
            if needs_gpu(cmd) or cmd in ran:  # the same line in two epilogs (e.g. train before rollout) runs once
                continue
            proc = run_command(cmd, cwd)
            expect = 1 if "exit 1" in line else 0
            assert proc.returncode == expect, f"`graphdl {name} --help` example `{cmd}` exited {proc.returncode}:\n" \
                                             f"{proc.stderr[-3000:]}"
            ran.append(cmd)
    assert len(ran) >= 15
