"""Coursework kit command line (thin: the work is in build.py, grade.py, submit.py).

    python -m minispanbert.coursework build A1 --out DIR [--hints {derivations,equations,none}]
                                                                   instructor: student copy + autograder
    python -m minispanbert.coursework grade SUBMISSION --assignment A1 [--out results.json]
    python -m minispanbert.coursework grade SUBMISSION --autograder DIR/autograder [--out results.json]
    python -m minispanbert.coursework submit [--root .] [--out FILE.zip]    student: zip to upload
    python -m minispanbert.coursework list                         the shipped assignments
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minispanbert.coursework", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("build", help="build the student copy and the autograder of an assignment")
    p.add_argument("assignment", help="assignment id, e.g. A1 (see `list`)")
    p.add_argument("--out", required=True, help="new or empty folder to write student/, autograder/ and autograder.zip into")
    p.add_argument("--hints", choices=("derivations", "equations", "none"), default="derivations",
                   help="how much of each stubbed function's documentation stays: all (default), the forward "
                        "equations and shapes without the derivative, or a one-line summary")
    p = commands.add_parser("grade", help="grade a submission (folder or zip) and write results.json")
    p.add_argument("submission")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--autograder", help="a built DIR/autograder folder")
    which.add_argument("--assignment", help="build this assignment's autograder from this checkout first")
    p.add_argument("--out", help="where to write results.json (default: only the summary is printed)")
    p = commands.add_parser("submit", help="check your assignment copy and write the zip to upload")
    p.add_argument("--root", default=".", help="the assignment copy (default: the current folder)")
    p.add_argument("--out", help="zip path (default: ROOT/submission-<id>.zip)")
    commands.add_parser("list", help="list the shipped assignments")
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            from minispanbert.coursework.build import build
            out = build(args.assignment, args.out, hints=args.hints)
            print(f"built {args.assignment}: {out / 'student'} (give to students), {out / 'autograder'} "
                  f"and {out / 'autograder.zip'} (upload to Gradescope)")
        elif args.command == "grade":
            from minispanbert.coursework.grade import grade, summary
            if args.out:
                from minispanbert.engine.runs.atomic import check_output_file
                check_output_file(args.out, make_parent=True)  # before the grading, not after it
            if not Path(args.submission).exists():
                raise ValueError(f"submission {args.submission} does not exist: pass a folder or a zip")
            if args.autograder:
                report = grade(args.submission, args.autograder, out=args.out)
            else:
                from minispanbert.coursework.build import build
                with tempfile.TemporaryDirectory(prefix="coursework-build-") as tmp:
                    built = build(args.assignment, Path(tmp) / "build")
                    report = grade(args.submission, built / "autograder", out=args.out)
            print(summary(report))
        elif args.command == "submit":
            from minispanbert.coursework.submit import submit
            out, warnings = submit(args.root, args.out)
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
            print(f"wrote {out}: upload it to Gradescope")
        else:
            from minispanbert.coursework.assignment import available, load
            for name in available():
                spec = load(name)
                hidden = sum(t.hidden for t in spec.tests)
                print(f"{spec.id}  {spec.title}  ({len(spec.functions)} functions, {len(spec.tests)} tests of "
                      f"which {hidden} hidden, {spec.max_score:g} points)")
    except Exception as exc:  # noqa: BLE001 -- one line, never a traceback; grade still leaves a results.json
        if args.command == "grade" and args.out:
            from minispanbert.coursework.grade import write_failure_results
            try:
                write_failure_results(args.out, str(exc))
            except (OSError, ValueError):
                pass  # the --out problem itself is the one line printed below
        if not isinstance(exc, (ValueError, OSError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
