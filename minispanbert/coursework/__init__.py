"""Coursework kit: turn minispanbert into graded assignments (README, "For instructors").

    assignment.py   an assignment as data (assignments/*.toml)
    stubs.py        listed functions -> signature + docstring + raise NotImplementedError
    notebooks.py    nbgrader's ### BEGIN/END SOLUTION regions removed, outputs cleared
    build.py        DIR/student, DIR/autograder, DIR/autograder.zip
    grade.py        a submission -> Gradescope's results.json (checks/ holds the graded tests)
    submit.py       the student's zip
    workflow.py     check (the visible tests in the student copy), grade-all (a folder -> grades.csv
                    and reports), new (an assignment file to fill in)
"""
