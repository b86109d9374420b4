"""What a graded test can say: compare a value with its reference, compare an analytic gradient
with centred differences, bound a statistic, or assert a property, each failing with a message a
student can act on (which tensor, the relative error, the expected range, a hint).

A test is a function ``test(check)`` registered with :func:`graded` in an assignment's checks
module; ``check`` is a :class:`Check`. Reference keys are ``"<test name>/<what>"`` in one ``.npz``
per assignment (with ``"<key>#rtol"``, the tolerance the test asked for). A :class:`Check` works in
one of three modes:

- record (build time, on the solution): :meth:`Check.close` and :meth:`Check.equal` store the value
  and its tolerance and pass; the other checks run as when grading, so a build fails if the
  solution does not pass;
- collect (grading, in the sandboxed child that runs the submission, checks/sandbox.py): no
  reference exists in that process; every check hands its values (arrays, the gradient pair, the
  statistic) to a ``collector`` instead of deciding, except :meth:`Check.expect` and a value that
  is not an array, which fail at once;
- compare (``refs`` given, ``record=False``): decide at once. The trusted grader (checks/runner.py)
  replays a child's collected values through this mode with :func:`judge`.

Only close and equal need the references; gradient, within and expect are self-consistency checks
that a malicious child could satisfy without them (it can report any analytic/numeric pair, any
statistic, any condition): a test graded by them alone can be forged; close and equal cannot. A
backward judged by :meth:`Check.derivative` is decided by its reference while the forward it
differentiates matches its own; after a wrong forward, by self-consistency too.

Feedback (:func:`judge`): a test scores the share of its graded values (its references, less the
forward values a backward test only asks :meth:`Check.agrees` about) that match; a test that stopped
early or failed a reference-free check scores 0. Every failing value is reported, and a failing value
equal to the recorded output of a known wrong variant (key ``"<test>/<what>@<variant>"``, its sentence
under ``"...#why"``; recorded at build time by the grader-only ``misconceptions`` module) names that
misconception.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

import numpy as np

FORBIDDEN_MODULES = ("torch", "jax", "autograd")
ZERO_REFERENCE = 1e-12  # a float64 reference this small is an exact zero plus rounding noise
ZERO_TOLERANCE = 1e-9
TOLERANCE_SUFFIX = "#rtol"  # "<test>/<what>#rtol": the tolerance close() was recorded with
FORWARD_SUFFIX = "#forward"  # "<test>/<what>#forward": a value the test only asks agrees() about
LISTED_FAILURES = 8  # failing values a message spells out in full (the rest by name)
VARIANT_MARK, WHY_SUFFIX = "@", "#why"  # "<test>/<what>@<variant>" and its sentence "<...>#why"


class Fail(AssertionError):
    """A graded test failed; its message is what the student reads."""


def graded(registry: dict):
    """Decorator factory: ``tests = {}; @graded(tests) def name(check): ...`` registers by name."""
    def register(fn):
        registry[fn.__name__] = fn
        return fn
    return register


def _as_array(value, what):
    if hasattr(value, "get") and type(value).__module__.startswith("cupy"):
        value = value.get()
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 -- any unconvertible object is the student's to fix
        raise Fail(f"{what}: expected an array, got {type(value).__name__}") from None
    if array.dtype == object:
        raise Fail(f"{what}: expected an array of numbers, got {type(value).__name__} holding "
                   "mixed objects (a tuple where one array was expected?)")
    return array


class Pending:
    """What :meth:`Check.agrees` returns in collect mode: the forward value ``what`` whose agreement
    with its reference only the grader can decide."""

    def __init__(self, what: str):
        self.what = what


class Check:
    """One graded test's view of the world: the submission's functions, seeded inputs, and the
    comparisons. ``refs`` is the reference dict (filled in record mode, read in compare mode, None
    in collect mode, where ``collector`` receives what the test would compare)."""

    def __init__(self, test_name: str, refs: dict | None, *, record: bool, collector=None):
        self.name, self.refs, self.record, self.collector = test_name, refs, record, collector

    # --- inputs -----------------------------------------------------------------------------
    @staticmethod
    def function(spec: str):
        """``"package.module:function"`` -> the submission's function."""
        module, name = spec.split(":")
        return getattr(importlib.import_module(module), name)

    @staticmethod
    def rng(seed: int) -> np.random.Generator:
        return np.random.default_rng(seed)

    # --- comparisons with the stored reference --------------------------------------------------
    def _reference(self, what: str, value, rtol: float | None = None):
        """The reference for ``what`` and the tolerance to judge it with: the one recorded at build
        time, never the one a (possibly forged) collected record asks for."""
        key = f"{self.name}/{what}"
        if self.record:
            self.refs[key] = np.array(value)  # a copy: later in-place work must not change it
            if rtol is not None:
                self.refs[f"{key}{TOLERANCE_SUFFIX}"] = np.float64(rtol)
            return self.refs[key], rtol
        if key not in self.refs:
            raise RuntimeError(f"the autograder has no reference {key!r}: rebuild it with "
                               "python -m minispanbert.coursework build")
        recorded = self.refs.get(f"{key}{TOLERANCE_SUFFIX}")
        return self.refs[key], (rtol if recorded is None else float(recorded))

    def close(self, what: str, value, *, rtol: float = 1e-7, hint: str = "") -> None:
        """``value`` must match the reference to a relative error (gradcheck.rel_error) below ``rtol``."""
        from minispanbert.gradcheck import rel_error

        actual = _as_array(value, what)
        if self.collector is not None:
            return self.collector.add("close", what, {"value": actual}, rtol=rtol, hint=hint)
        expected, rtol = self._reference(what, actual, rtol)
        if actual.shape != expected.shape:
            raise Fail(f"{what}: shape {actual.shape}, expected {expected.shape}. {hint}".rstrip())
        if not np.all(np.isfinite(actual)):
            bad = int(np.size(actual) - np.isfinite(actual).sum())
            raise Fail(f"{what}: {bad} of {actual.size} entries are nan or inf (an overflow? a division "
                       f"by zero?). {hint}".rstrip())
        if np.max(np.abs(expected), initial=0.0) < ZERO_REFERENCE:
            # Zero by symmetry (e.g. the attention key bias: softmax ignores a constant shift), so
            # the reference is rounding noise: require a value as small, not a relative match.
            if np.max(np.abs(actual), initial=0.0) > ZERO_TOLERANCE:
                raise Fail(f"{what} {actual.shape}: max |{what}| = {np.max(np.abs(actual)):.1e}, expected 0 (below "
                           f"{ZERO_TOLERANCE:.0e}): this gradient vanishes exactly in the true derivative. {hint}".rstrip())
            return
        err = rel_error(actual, expected)
        if err > rtol:
            raise Fail(f"{what} {actual.shape}: relative error {err:.1e} against the reference, expected "
                       f"below {rtol:.0e}. {hint}".rstrip())

    def equal(self, what: str, value, *, hint: str = "") -> None:
        """``value`` (ints, bools or strings) must equal the reference exactly."""
        actual = _as_array(value, what)
        if self.collector is not None:
            return self.collector.add("equal", what, {"value": actual}, hint=hint)
        expected, _ = self._reference(what, actual)
        if actual.shape != expected.shape or not np.array_equal(actual, expected):
            shown = np.array2string(actual.ravel()[:12], threshold=12)
            wanted = np.array2string(expected.ravel()[:12], threshold=12)
            raise Fail(f"{what}: got {shown} (shape {actual.shape}), expected {wanted} "
                       f"(shape {expected.shape}). {hint}".rstrip())

    def agrees(self, what: str, value, *, rtol: float = 1e-7):
        """Whether ``value`` matches its reference, without failing (record mode: stores it, True).
        A backward test asks this of the submission's forward output before judging the backward. In
        collect mode the child cannot know: it records the value and returns a :class:`Pending` that
        :func:`judge` resolves in the grader."""
        if self.collector is not None:
            self.collector.add("agrees", what, {"value": _as_array(value, what)}, rtol=rtol)
            return Pending(what)
        if self.record:
            self.refs[f"{self.name}/{what}{FORWARD_SUFFIX}"] = np.True_
        try:
            self.close(what, value, rtol=rtol)
        except Fail:
            return False
        return True

    def close_if(self, forward_agrees, what: str, value, *, rtol: float = 1e-7, hint: str = "") -> None:
        """:meth:`close`, only where the forward reproduced its reference (``forward_agrees`` from
        :meth:`agrees`): a gradient computed from a wrong forward's cache is judged by :meth:`derivative`."""
        if self.collector is not None:
            forward = forward_agrees.what if isinstance(forward_agrees, Pending) else None
            return self.collector.add("close_if", what, {"value": _as_array(value, what)}, forward=forward,
                                      rtol=rtol, hint=hint)
        if forward_agrees:
            self.close(what, value, rtol=rtol, hint=hint)

    def derivative(self, what: str, analytic, f, x, dout=None, *, forward_agrees, rtol: float = 1e-7,
                   tol: float = 1e-6, hint: str = "") -> None:
        """A backward's output, charged only for the backward's own mistakes (:meth:`decide_derivative`).
        ``forward_agrees``: what :meth:`agrees` said of the forward output the backward's cache holds."""
        from minispanbert.gradcheck import numerical_gradient

        analytic = _as_array(analytic, what)
        if self.collector is not None:
            forward = forward_agrees.what if isinstance(forward_agrees, Pending) else None
            arrays = {"analytic": analytic, "numeric": numerical_gradient(f, x, dout)}
            return self.collector.add("derivative", what, arrays, forward=forward, rtol=rtol, tol=tol, hint=hint)
        self.decide_derivative(what, analytic, lambda: numerical_gradient(f, x, dout), forward_agrees=forward_agrees,
                               rtol=rtol, tol=tol, hint=hint)

    def decide_derivative(self, what: str, analytic, numeric, *, forward_agrees: bool, rtol: float, tol: float,
                          hint: str = "") -> None:
        """When the forward reproduced its reference, ``analytic`` must match both its reference and
        the centred differences ``numeric`` (an array, or a function computing it). When the forward is
        wrong (its own test charges that), the cache holds the wrong forward's values, so either match
        suffices: the reference (the backward is right and did not read the forward's mistake) or the
        derivative of the submission's own forward (a self-consistency check, as :meth:`gradient`)."""
        if forward_agrees:
            self.close(what, analytic, rtol=rtol, hint=hint)
        elif self.agrees(what, analytic, rtol=rtol):
            return
        Check.compare_gradient(what, analytic, numeric() if callable(numeric) else numeric, tol=tol, hint=hint)

    # --- checks that need no reference ------------------------------------------------------------
    def gradient(self, what: str, analytic, f, x, dout=None, *, tol: float = 1e-6, hint: str = "") -> None:
        """``analytic`` must match the centred-difference gradient of ``sum(f() * dout)`` w.r.t. ``x``
        (float64, minispanbert.gradcheck) to a relative error below ``tol``."""
        from minispanbert.gradcheck import numerical_gradient

        analytic = _as_array(analytic, what)
        numeric = numerical_gradient(f, x, dout)
        if self.collector is not None:
            return self.collector.add("gradient", what, {"analytic": analytic, "numeric": numeric}, tol=tol, hint=hint)
        self.compare_gradient(what, analytic, numeric, tol=tol, hint=hint)

    @staticmethod
    def compare_gradient(what: str, analytic, numeric, *, tol: float, hint: str = "") -> None:
        """The decision of :meth:`gradient`, given both gradients."""
        from minispanbert.gradcheck import rel_error

        if analytic.shape != numeric.shape:
            raise Fail(f"{what}: shape {analytic.shape}, expected {numeric.shape} (the shape of the "
                       f"input it differentiates). {hint}".rstrip())
        err = rel_error(analytic, numeric)
        if not err <= tol:
            raise Fail(f"{what} {analytic.shape}: your backward disagrees with the numerical gradient of your forward "
                       f"(centred differences, float64): relative error {err:.1e}, expected below "
                       f"{tol:.0e}. {hint}".rstrip())

    def within(self, what: str, value: float, low: float, high: float, *, why: str, hint: str = "") -> None:
        """A statistic must lie in [low, high]; ``why`` states where the tolerance comes from."""
        if self.collector is not None:
            return self.collector.add("within", what, {}, value=float(value), low=float(low), high=float(high),
                                      why=str(why), hint=hint)
        if not low <= value <= high:
            raise Fail(f"{what} = {value:.4f}, expected in [{low:.4f}, {high:.4f}] ({why}). {hint}".rstrip())

    @staticmethod
    def expect(condition, message: str) -> None:
        if not condition:
            raise Fail(message)


def matches(actual, expected, rtol: float | None) -> bool:
    """Whether ``actual`` equals ``expected`` as :meth:`Check.close` (``rtol``) or :meth:`Check.equal`
    (``rtol`` None) would judge it, nan and inf counting as equal where both have them (a recorded
    wrong variant may overflow, as the submission that makes its mistake does)."""
    from minispanbert.gradcheck import rel_error

    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return False
    if rtol is None or actual.dtype.kind not in "fc" or expected.dtype.kind not in "fc":
        return bool(np.array_equal(actual, expected))
    finite = np.isfinite(expected)
    if not np.array_equal(finite, np.isfinite(actual)) or not np.array_equal(
            np.nan_to_num(expected[~finite]), np.nan_to_num(actual[~finite])):
        return False
    actual, expected = actual[finite], expected[finite]
    if np.max(np.abs(expected), initial=0.0) < ZERO_REFERENCE:
        return bool(np.max(np.abs(actual), initial=0.0) <= ZERO_TOLERANCE)
    return bool(rel_error(actual, expected) <= rtol)


def _metadata(key: str) -> bool:
    return key.endswith((TOLERANCE_SUFFIX, FORWARD_SUFFIX, WHY_SUFFIX)) or VARIANT_MARK in key


# Every graded backward is also run once at scale in float32 (:func:`at_scale`). Honest float32 gradients match
# the float32 reference to rounding: at most 2e-6 in rel_error over A1-A3's functions (4e-7 for A1's layers),
# measured against float64, so 1e-4 leaves 50x; centred differences in float32 are off by 1e-3 or more.
FLOAT32_RTOL = 1e-4
# The forward output at scale agrees when within 1e-6 (float32 rounding of an honest forward is ~1e-7): a forward
# mistake that moves the loss by less than 1e-4 (eps ignored in the SBO head) can move the gradients by more, and
# is charged by its forward's own test only.
FLOAT32_FORWARD_RTOL = 1e-6
AT_SCALE_HINT = ("this input has about 1e5 elements, in float32: an analytic backward takes milliseconds, one "
                 "computed by finite differences (2 forward passes per element) takes minutes and is inexact in "
                 "float32; write the derivative by hand.")


def at_scale(check: Check, forward_what: str, forward_value, gradients: dict) -> None:
    """Judge a backward run on a large float32 input: ``gradients`` {what: value} against their float32
    references while the forward output ``forward_value`` agrees with its own (a wrong forward is
    charged by its own test). The size is the point: a backward computed by centred differences of the
    forward (gradcheck.numerical_gradient, or a loop of one's own) needs 2 forward passes per element,
    far beyond the test's time limit, and numerical_gradient refuses float32 outright."""
    ok = check.agrees(f"{forward_what} (float32, at scale)", forward_value, rtol=FLOAT32_FORWARD_RTOL)
    for what, value in gradients.items():
        check.close_if(ok, f"{what} (float32, at scale)", value, rtol=FLOAT32_RTOL, hint=AT_SCALE_HINT)


def reference_keys(refs: dict, test_name: str) -> list[str]:
    """The ``what`` of every value ``test_name`` must produce (its close, equal and agrees references)."""
    prefix = f"{test_name}/"
    return [key[len(prefix):] for key in refs if key.startswith(prefix) and not _metadata(key)]


def graded_keys(refs: dict, test_name: str) -> list[str]:
    """The values ``test_name`` is scored on: its references less the forward values it only asks agrees() about."""
    return [what for what in reference_keys(refs, test_name) if f"{test_name}/{what}{FORWARD_SUFFIX}" not in refs]


def misconception(refs: dict, test_name: str, what: str, actual, rtol: float | None) -> str | None:
    """The sentence of the first recorded wrong variant of ``test_name``'s ``what`` that ``actual`` equals."""
    prefix = f"{test_name}/{what}{VARIANT_MARK}"
    for key in refs:
        if key.startswith(prefix) and not key.endswith(WHY_SUFFIX) and matches(actual, refs[key], rtol):
            return str(refs[f"{key}{WHY_SUFFIX}"])
    return None


class Verdict(NamedTuple):
    """What :func:`judge` decides: the share of the test's points earned, and the message (None: full marks)."""

    fraction: float
    message: str | None


def _judged_value(kind, arrays, options, agreements):
    """The value a failing record compared with its reference (None when it compared with none)."""
    if kind in ("close", "equal"):
        return arrays["value"]
    if kind == "close_if" and agreements.get(options.get("forward"), False):
        return arrays["value"]
    if kind == "derivative" and agreements.get(options.get("forward"), False):
        return arrays["analytic"]
    return None


def judge(test_name: str, records, refs: dict, stopped: str | None) -> Verdict:
    """Replay a sandboxed child's collected values against the references (compare mode) -> a
    :class:`Verdict`. ``records`` are (kind, what, arrays, options) in the order the child made them;
    ``stopped`` is why the child's test ended early (its own failure, an exception, a crash), None
    when it ran to the end. Each graded value (:func:`graded_keys`) is judged on its own: the test
    earns the share of them that were produced and matched (a backward value after its forward's
    agreement is decided, as before). It earns 0 when ``stopped`` is set or a check that needs no
    reference (gradient, within, a close on a forward-only value) failed: such a condition is the
    whole test's. The message lists every failure in record order (the first eight in full, a hint
    shared by several once), each with the misconception its value matches. A record for a value the test has no reference for is ignored, so is an unknown
    kind: a child cannot add passing checks, only fail its own."""
    check = Check(test_name, refs, record=False)
    expected = set(reference_keys(refs, test_name))
    parts = graded_keys(refs, test_name)
    failures: dict[str, str] = {}  # graded value -> its first failure, in record order
    conditions: list[str] = []  # failed checks that are the whole test's
    judged, agreements, shown_hints = set(), {}, set()
    for kind, what, arrays, options in records:
        hint = str(options.get("hint", ""))
        try:
            if kind in ("close", "equal") and what in expected:
                judged.add(what)
                if kind == "close":
                    check.close(what, arrays["value"], rtol=float(options.get("rtol", 1e-7)), hint=hint)
                else:
                    check.equal(what, arrays["value"], hint=hint)
            elif kind == "agrees" and what in expected:
                judged.add(what)
                agreements[what] = check.agrees(what, arrays["value"])
            elif kind == "close_if" and what in expected:
                judged.add(what)
                if agreements.get(options.get("forward"), False):
                    check.close(what, arrays["value"], hint=hint)
            elif kind == "derivative" and what in expected:
                judged.add(what)
                check.decide_derivative(what, _as_array(arrays["analytic"], what), _as_array(arrays["numeric"], what),
                                        forward_agrees=agreements.get(options.get("forward"), False),
                                        rtol=float(options["rtol"]), tol=float(options["tol"]), hint=hint)
            elif kind == "gradient":
                Check.compare_gradient(what, _as_array(arrays["analytic"], what), _as_array(arrays["numeric"], what),
                                       tol=float(options["tol"]), hint=hint)
            elif kind == "within":
                check.within(what, float(options["value"]), float(options["low"]), float(options["high"]),
                             why=str(options["why"]), hint=hint)
            continue
        except Fail as exc:
            message = str(exc)
            try:
                actual = _judged_value(kind, arrays, options, agreements)
                rtol = None if kind == "equal" else float(refs.get(f"{test_name}/{what}{TOLERANCE_SUFFIX}", 1e-7))
                why = None if actual is None else misconception(refs, test_name, what, actual, rtol)
            except (KeyError, TypeError, ValueError, OSError):
                why = None
            if why:
                message += f"\n  {what} matches a known mistake: {why}"
        except (KeyError, TypeError, ValueError) as exc:
            message = f"{what}: the test process returned an unreadable {kind} record ({type(exc).__name__})"
        if hint and hint in shown_hints:  # said once, for the first value it explains
            message = message.replace(f" {hint}", "", 1)
        shown_hints.add(hint)
        if what in parts and kind != "gradient" and kind != "within":
            failures.setdefault(what, message)
        else:
            conditions.append(message)
    passed = [what for what in parts if what in judged and what not in failures]
    missing = sorted(set(parts) - judged)
    whole_test = conditions + ([stopped] if stopped is not None else [])
    listed = list(failures.values())
    if len(listed) > LISTED_FAILURES:
        rest = ", ".join(list(failures)[LISTED_FAILURES:])
        listed[LISTED_FAILURES:] = [f"and {len(failures) - LISTED_FAILURES} more values fail: "
                                    f"{rest if len(rest) <= 300 else rest[:300] + '...'}"]
    items = listed + whole_test
    if missing and stopped is None:
        items.append(f"the test process reported no value for {', '.join(missing)}: nothing to compare with the "
                     "reference")
    if not items:
        return Verdict(1.0, None)
    fraction = 0.0 if whole_test else len(passed) / len(parts)
    if not passed and len(items) == 1:
        return Verdict(fraction, items[0])
    if not parts:
        return Verdict(fraction, "\n".join(items))
    head = f"{len(passed)} of {len(parts)} values match the reference"
    if fraction:
        head += f" (partial credit, {len(passed)}/{len(parts)} of the points):"
    elif passed:
        head += ", but the test scores 0: it stopped early or failed a check that concerns the whole test:"
    else:
        head += ":"
    return Verdict(fraction, head + "\n" + "\n".join("- " + item for item in items))
