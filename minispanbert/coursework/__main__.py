"""Coursework kit command line (thin: the work is in build.py, grade.py, submit.py).

    python -m minispanbert.coursework build A1 --out DIR [--hints {derivations,equations,none}]
                                                                   instructor: student copy + autograder
    python -m minispanbert.coursework build --assignment PATH.toml --out DIR       (an assignment file)
    python -m minispanbert.coursework new NAME [--from A1] [--out NAME.toml]       a new assignment file
    python -m minispanbert.coursework grade-all SUBMISSIONS_DIR --autograder DIR/autograder --csv grades.csv
                                      [--reports REPORTS_DIR] [--jobs N]   one row and one report per student
    python -m minispanbert.coursework grade SUBMISSION --assignment A1 [--out results.json]
    python -m minispanbert.coursework grade SUBMISSION --autograder DIR/autograder [--out results.json]
    python -m minispanbert.coursework check [--root .]             student: the visible tests on your code
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
    p.add_argument("assignment", nargs="?", help="assignment id, e.g. A1 (see `list`)")
    p.add_argument("--assignment", dest="assignment_file", metavar="PATH", help="an assignment file (see `new`)")
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
    p = commands.add_parser("check", help="run the visible graded tests on your assignment copy")
    p.add_argument("--root", default=".", help="the assignment copy (default: the current folder)")
    p = commands.add_parser("grade-all", help="grade a folder of submissions: a CSV and a report per student")
    p.add_argument("submissions", help="a folder with one subfolder or zip per student (its name is the student id)")
    p.add_argument("--autograder", required=True, help="a built DIR/autograder folder")
    p.add_argument("--csv", required=True, help="the grades file to write (one row per student)")
    p.add_argument("--reports", help="a new folder (or one grade-all wrote) for one feedback report per student")
    p.add_argument("--jobs", type=int, help="submissions graded at a time (default: the number of CPUs)")
    p = commands.add_parser("new", help="write a new assignment file to fill in")
    p.add_argument("name", help="the new assignment's id, e.g. A4")
    p.add_argument("--from", dest="source", help="start from this assignment (a shipped id or a file) instead of "
                                                 "the blank template")
    p.add_argument("--out", help="the file to write (default: ./NAME.toml); never overwritten")
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            from minispanbert.coursework.build import build
            if (args.assignment is None) == (args.assignment_file is None):
                raise ValueError("build needs one assignment: an id (build A1 --out DIR) or a file "
                                 "(build --assignment PATH.toml --out DIR)")
            which = args.assignment or args.assignment_file
            out = build(which, args.out, hints=args.hints)
            print(f"built {which}: {out / 'student'} (give to students), {out / 'autograder'} "
                  f"and {out / 'autograder.zip'} (upload to Gradescope)")
        elif args.command == "check":
            from minispanbert.coursework.workflow import check
            print(check(args.root)[1])
        elif args.command == "grade-all":
            from minispanbert.coursework.workflow import grade_all
            rows, notes = grade_all(args.submissions, args.autograder, args.csv, reports=args.reports, jobs=args.jobs)
            for note in notes:
                print(f"skipped {note}", file=sys.stderr)
            failed = sum("error" in report for report in rows.values())
            print(f"graded {len(rows)} submissions ({failed} could not be graded: see their rows): {args.csv}"
                  + (f", reports in {args.reports}" if args.reports else ""))
        elif args.command == "new":
            from minispanbert.coursework.workflow import new_assignment
            out = new_assignment(args.name, source=args.source, out=args.out)
            print(f"wrote {out}: fill it in, then build it with --assignment {out}")
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
