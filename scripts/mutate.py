"""Mutation testing of the domain core (app/domain/) by the unit tests alone.

    uv run python scripts/mutate.py                  # every module of app/domain, 2 workers
    uv run python scripts/mutate.py gate keywords    # some modules
    uv run python scripts/mutate.py --list gate      # the mutants, without running anything
    uv run python scripts/mutate.py --show "drop S.OPTED_OUT" transitions   # the diff of matching mutants
    uv run python scripts/mutate.py --markdown       # the per-file table and the equivalent mutants, for docs/

Why a script of our own: the domain's rules are module-level tables (the transition tables, the keyword lists,
the gate's precedence, the scanner user agents), and a test suite that pins them must be shown to fail when an
entry is missing. mutmut 3 mutates only inside functions (its trampolines switch whole functions), and
cosmic-ray has no operator that removes an element from a collection (custom operators need a plugin package
registered through entry points). This script mutates the syntax tree (``ast``) of every statement outside
docstrings, annotations and decorators:

- comparisons: ``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``, ``in`` ↔ ``not in``, ``is`` ↔ ``is not``;
- ``and`` ↔ ``or``; ``not x`` → ``x``; a bare condition ``if x`` → ``if not x``; ``min`` ↔ ``max``, ``any`` ↔ ``all``;
- arithmetic ``+`` ↔ ``-``, ``*`` ↔ ``/``, ``//`` → ``/``, ``%`` → ``*``; numbers ``n`` → ``n + 1``;
  ``True`` ↔ ``False``;
- machine-read strings (codes, keys, enum values: no spaces, no regex syntax) → ``"xx…xx"`` (lower case, so that
  case folding does not undo it); prose is left alone;
- one element removed from a tuple, list or set literal, one entry from a dict literal (a state from a rule's
  sources, a rule from a table, a keyword from a list, a letter from a folding table);
- ``return x`` → ``return None``; a call statement or a ``raise`` → ``pass``.

Each mutant runs in a forked child (POSIX only) that has the third-party libraries already imported: the child
drops the project's own modules, puts the mutated module in their place and runs pytest on the files of
tests/unit that load the mutated module (the ones importing it by name first, stopping at the first failure;
``--noconftest``: unit tests need no fixture of the database harness). A failing run kills the mutant, and so
does a mutant that cannot be imported or that runs past the time limit. Hypothesis runs derandomized and
without its example database, so a run is reproducible and leaves nothing behind. The unmutated tests must pass
first (``MUTATE_VERBOSE=1`` shows the children's pytest output). The source files are read once at the start;
do not edit app/domain while a run goes on.

Equivalent mutants (no behaviour changes) are listed with their reason in ``scripts/mutation_equivalents.toml``;
the score counts killed mutants among the non-equivalent ones. The keys name the module, the function and the
change, not line numbers, so they survive edits elsewhere in the file.
"""
# ruff: noqa: T201  # a command that prints its report, run by path (not an importable package)

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import importlib.util
import json
import os
import re
import signal
import sys
import time
import tomllib
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = ROOT / "app" / "domain"
UNIT_TESTS = ROOT / "tests" / "unit"
EQUIVALENTS = ROOT / "scripts" / "mutation_equivalents.toml"
PACKAGES = ("app", "channel_providers", "tests")
# pytest plugins installed with other packages that the unit tests do not use (faker's alone costs seconds)
_UNUSED_PLUGINS = ("faker", "anyio", "platformdirs")
_MACHINE_STRING = re.compile(r"^[A-Za-z0-9_:./+-]{0,40}$")

_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.Mult,
}
_NAME_SWAPS = {"min": "max", "max": "min", "any": "all", "all": "any"}


@dataclass(frozen=True, slots=True)
class Mutant:
    """One small change of one module."""

    module: str  # file name, e.g. gate.py
    node: int  # index of the changed node in the walk order of :class:`_Walker`
    variant: int  # which change of that node
    where: str  # the enclosing function or class (``<module>`` at top level)
    line: int
    before: str
    after: str
    key: str = ""


@dataclass(slots=True)
class Outcome:
    """What the tests made of a mutant."""

    mutant: Mutant
    status: str  # killed, survived, timeout, error (could not be imported)
    seconds: float


@dataclass(slots=True)
class _Candidate:
    node: ast.AST
    where: str
    apply: Callable[[], ast.AST | None]  # mutates in place, or returns a replacement node
    label: str | None  # what the change is, where the changed node's source would not say it
    shown: ast.AST | None  # the part named as "before" (default: the node)


_SHOWN = 80  # characters of source shown (and keyed) per mutant


def _source(node: ast.AST) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


@dataclass
class _Walker:
    """Walks a module's tree in a fixed order and offers the mutations of each node."""

    candidates: list[_Candidate] = field(default_factory=list)
    _scope: list[str] = field(default_factory=list)
    _parents: dict[int, tuple[ast.AST, str, int | None]] = field(default_factory=dict)

    def walk(self, tree: ast.Module) -> list[_Candidate]:
        for parent in ast.walk(tree):
            for name, value in ast.iter_fields(parent):
                if isinstance(value, list):
                    for index, child in enumerate(value):
                        if isinstance(child, ast.AST):
                            self._parents[id(child)] = (parent, name, index)
                elif isinstance(value, ast.AST):
                    self._parents[id(value)] = (parent, name, None)
        self._body(tree.body)
        return self.candidates

    # -- traversal -------------------------------------------------------------------------------------------

    def _where(self) -> str:
        return ".".join(self._scope) or "<module>"

    def _body(self, body: list[ast.stmt]) -> None:
        start = 1 if body and _is_docstring(body[0]) else 0
        for statement in body[start:]:
            self._statement(statement)

    def _statement(self, node: ast.stmt) -> None:  # noqa: C901, PLR0912  # one branch per kind of statement
        if isinstance(node, ast.Import | ast.ImportFrom):
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self._scope.append(node.name)
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
                self._expression(default)
            self._body(node.body)
            self._scope.pop()
            return
        if isinstance(node, ast.ClassDef):
            self._scope.append(node.name)
            self._body(node.body)
            self._scope.pop()
            return
        if isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
            self._offer_return(node)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            self._offer_pass(node)
        if isinstance(node, ast.Raise):
            self._offer_pass(node)
        if isinstance(node, ast.If | ast.While):
            self._offer_negation(node)
        for name, value in ast.iter_fields(node):
            if name == "annotation":
                continue
            if isinstance(value, list):
                for child in value:
                    if isinstance(child, ast.stmt):
                        self._statement(child)
                    elif isinstance(child, ast.AST):
                        self._expression(child)
            elif isinstance(value, ast.AST) and not isinstance(value, ast.expr_context):
                self._expression(value)

    def _expression(self, node: ast.AST) -> None:  # noqa: C901  # one branch per kind of node
        if isinstance(node, ast.JoinedStr):
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    self._expression(value.value)
            return
        if isinstance(node, ast.Lambda):
            self._expression(node.body)
            return
        if isinstance(node, ast.stmt):
            self._statement(node)
            return
        self._offer(node)
        for name, value in ast.iter_fields(node):
            if name == "ctx":
                continue
            if isinstance(value, list):
                for child in value:
                    if isinstance(child, ast.AST):
                        self._expression(child)
            elif isinstance(value, ast.AST):
                self._expression(value)

    # -- the mutations ---------------------------------------------------------------------------------------

    def _add(
        self,
        node: ast.AST,
        apply: Callable[[], ast.AST | None],
        label: str | None = None,
        shown: ast.AST | None = None,
    ) -> None:
        self.candidates.append(_Candidate(node, self._where(), apply, label, shown))

    def _offer(self, node: ast.AST) -> None:  # noqa: C901, PLR0912
        if isinstance(node, ast.Compare):
            for index, op in enumerate(node.ops):
                if type(op) in _COMPARE_SWAPS:
                    self._offer_compare(node, index)
        elif isinstance(node, ast.BoolOp):
            self._offer_swap_field(node, "op", ast.Or() if isinstance(node.op, ast.And) else ast.And())
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._offer_replace(node, lambda n=node: n.operand)  # type: ignore[misc]
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
            self._offer_swap_field(node, "op", _BINOP_SWAPS[type(node.op)]())
        elif isinstance(node, ast.IfExp):
            self._offer_negation(node)
        elif isinstance(node, ast.comprehension):
            for index in range(len(node.ifs)):
                self._offer_comprehension_negation(node, index)
        elif isinstance(node, ast.Name) and node.id in _NAME_SWAPS and isinstance(node.ctx, ast.Load):
            self._offer_swap_field(node, "id", _NAME_SWAPS[node.id])
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                self._offer_swap_field(node, "value", not value)
            elif isinstance(value, int | float):
                self._offer_swap_field(node, "value", value + 1)
            elif isinstance(value, str) and _MACHINE_STRING.match(value):
                self._offer_swap_field(node, "value", f"xx{value}xx")
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and isinstance(getattr(node, "ctx", ast.Load()), ast.Load):
            for index in range(len(node.elts)):
                self._offer_drop(node, index)
        if isinstance(node, ast.Dict):
            for index in range(len(node.keys)):
                self._offer_drop_entry(node, index)

    def _offer_compare(self, node: ast.Compare, index: int) -> None:
        def apply() -> None:
            node.ops[index] = _COMPARE_SWAPS[type(node.ops[index])]()

        self._add(node, apply)

    def _offer_swap_field(self, node: ast.AST, name: str, value: object) -> None:
        def apply() -> None:
            setattr(node, name, value)

        self._add(node, apply)

    def _offer_replace(self, node: ast.AST, replacement: Callable[[], ast.AST]) -> None:
        self._add(node, replacement)

    def _offer_negation(self, node: ast.If | ast.While | ast.IfExp) -> None:
        if isinstance(node.test, ast.Compare | ast.BoolOp) or (
            isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)
        ):
            return  # the comparison's own mutations cover it

        def apply() -> None:
            node.test = ast.UnaryOp(ast.Not(), node.test)

        self._add(node, apply, f"not ({_source(node.test)})", node.test)

    def _offer_comprehension_negation(self, node: ast.comprehension, index: int) -> None:
        condition = node.ifs[index]
        if isinstance(condition, ast.Compare | ast.BoolOp):
            return

        def apply() -> None:
            node.ifs[index] = ast.UnaryOp(ast.Not(), condition)

        self._add(node, apply, f"not ({_source(condition)})", condition)

    def _offer_drop(self, node: ast.Tuple | ast.List | ast.Set, index: int) -> None:
        def apply() -> None:
            del node.elts[index]

        self._add(node, apply, f"drop {_source(node.elts[index])}")

    def _offer_drop_entry(self, node: ast.Dict, index: int) -> None:
        key = node.keys[index]

        def apply() -> None:
            del node.keys[index]
            del node.values[index]

        self._add(node, apply, f"drop the entry {_source(key) if key is not None else '**'}")

    def _offer_return(self, node: ast.Return) -> None:
        def apply() -> None:
            node.value = ast.Constant(None)

        self._add(node, apply, "return None")

    def _offer_pass(self, node: ast.stmt) -> None:
        self._add(node, ast.Pass, "pass")

    def parent_of(self, node: ast.AST) -> tuple[ast.AST, str, int | None]:
        return self._parents[id(node)]


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


_SOURCES: dict[Path, str] = {}


def _read(path: Path) -> str:
    """The module's text as first read: a run is not confused by edits made while it goes on."""
    if path not in _SOURCES:
        _SOURCES[path] = path.read_text()
    return _SOURCES[path]


def _mutated_tree(path: Path, number: int) -> tuple[ast.Module, str, str, str, int]:
    """The module's tree with its ``number``-th mutation applied, and what changed."""
    tree = ast.parse(_read(path), filename=str(path))
    walker = _Walker()
    candidate = walker.walk(tree)[number]
    node = candidate.node
    before = _source(candidate.shown or node)
    target = node
    replacement = candidate.apply()
    if replacement is not None:
        parent, name, index = walker.parent_of(node)
        if index is None:
            setattr(parent, name, replacement)
        else:
            getattr(parent, name)[index] = replacement
        target = replacement
    after = candidate.label or _source(target)
    ast.fix_missing_locations(tree)
    return tree, candidate.where, before, after, getattr(node, "lineno", 0)


def mutants_of(path: Path) -> list[Mutant]:
    """Every mutant of one module, with a key that does not depend on line numbers."""
    count = len(_Walker().walk(ast.parse(_read(path))))
    found = []
    seen: Counter[str] = Counter()
    for number in range(count):
        _, where, before, after, line = _mutated_tree(path, number)
        key = f"{path.name}::{where}::{before} → {after}"
        seen[key] += 1
        if seen[key] > 1:
            key = f"{key} #{seen[key]}"
        found.append(Mutant(path.name, number, 0, where, line, before, after, key))
    return found


def diff(path: Path, number: int) -> str:
    """The mutant as a unified diff of the module (both sides re-printed from the syntax tree)."""
    original = ast.unparse(ast.parse(_read(path))).splitlines()
    mutated = ast.unparse(_mutated_tree(path, number)[0]).splitlines()
    return "\n".join(difflib.unified_diff(original, mutated, path.name, f"{path.name} (mutant)", n=1, lineterm=""))


# -- running ------------------------------------------------------------------------------------------------


def _preload(folder: Path) -> dict[str, list[str]]:
    """Import every unit test file once; answer which of them load each domain module.

    The third-party libraries they need stay imported, so each forked child starts warm; the project's own
    modules are dropped again, for the child to load with the mutant in place. A test file that never loads a
    module cannot kill its mutants, so only the files that do are run for them (those that import the module
    by name first, as they fail soonest).
    """
    import _hypothesis_pytestplugin  # type: ignore[import-untyped]  # noqa: F401, PLC0415
    import pytest  # noqa: F401, PLC0415
    import pytest_asyncio.plugin  # noqa: F401, PLC0415
    from hypothesis import settings  # noqa: PLC0415

    settings.register_profile("mutation", database=None, derandomize=True, deadline=None, print_blob=False)
    sys.path.insert(0, str(ROOT))
    loads: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"_warm_{path.stem}", path)
        assert spec is not None
        assert spec.loader is not None
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        for name in [n for n in sys.modules if n.split(".")[0] in PACKAGES]:
            if name.startswith("app.domain."):
                loads.setdefault(name.removeprefix("app.domain.") + ".py", []).append(path)
            del sys.modules[name]
    files = {}
    for module, paths in loads.items():
        direct = [p for p in paths if re.search(rf"app\.domain\.{module.removesuffix('.py')}\b", p.read_text())]
        files[module] = [str(p) for p in direct + [p for p in paths if p not in direct]]
    return files


def _child(path: Path | None, number: int | None, test_files: list[str]) -> int:
    """In the forked child: swap in the mutated module and run the tests; the exit code says what happened."""
    import pytest  # noqa: PLC0415
    from hypothesis import settings  # noqa: PLC0415

    settings.load_profile("mutation")
    if not os.environ.get("MUTATE_VERBOSE"):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    if path is not None and number is not None:
        try:
            tree, *_ = _mutated_tree(path, number)
            name = f"app.domain.{path.stem}"
            importlib.import_module("app.domain")
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            exec(compile(tree, str(path), "exec"), module.__dict__)  # noqa: S102
            setattr(sys.modules["app.domain"], path.stem, module)
        except Exception:  # noqa: BLE001  # a mutant that cannot even be imported is detected
            return 100
    if not test_files:
        return 0  # no unit test loads the module: nothing can notice the mutant
    args = [*test_files, "-x", "-q", "--assert=plain", "--noconftest", "-c", str(ROOT / "pyproject.toml")]
    args += ["--rootdir", str(ROOT), "-p", "no:cacheprovider"]
    for plugin in _UNUSED_PLUGINS:
        args += ["-p", f"no:{plugin}"]
    return int(pytest.main(args))


def _fork(path: Path | None, number: int | None, test_files: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = _child(path, number, test_files)
        except BaseException:  # noqa: BLE001  # reported, and the child ends either way
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def run(targets: list[Path], jobs: int, timeout: float | None, folder: Path = UNIT_TESTS) -> list[Outcome]:
    """Run every mutant of ``targets``; prints progress on stderr."""
    files_for = _preload(folder)
    all_files = sorted({file for files in files_for.values() for file in files})
    started = time.monotonic()
    baseline = _fork(None, None, all_files)
    _, status = os.waitpid(baseline, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("The unit tests fail without any mutation: fix them first.")
    clean = time.monotonic() - started
    limit = timeout or max(15.0, 10 * clean)
    print(f"unit tests without mutation: {clean:.1f} s; time limit per mutant {limit:.0f} s", file=sys.stderr)

    queue = [(path, mutant) for path in targets for mutant in mutants_of(path)]
    total = len(queue)
    running: dict[int, tuple[Mutant, float]] = {}
    outcomes: list[Outcome] = []
    while queue or running:
        while queue and len(running) < jobs:
            path, mutant = queue.pop(0)
            running[_fork(path, mutant.node, files_for.get(path.name, []))] = (mutant, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for child, (mutant, since) in list(running.items()):
                if now - since > limit:
                    os.kill(child, signal.SIGKILL)
                    os.waitpid(child, 0)
                    del running[child]
                    outcomes.append(Outcome(mutant, "timeout", now - since))
            time.sleep(0.02)
            continue
        mutant, since = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        verdict = {0: "survived", 100: "error"}.get(code, "killed")
        outcomes.append(Outcome(mutant, verdict, time.monotonic() - since))
        done = len(outcomes)
        if done % 25 == 0 or done == total:
            print(f"  {done}/{total} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return sorted(outcomes, key=lambda o: (o.mutant.module, o.mutant.node))


# -- reporting ----------------------------------------------------------------------------------------------


def load_equivalents() -> dict[str, str]:
    """Key → reason of the mutants that change no behaviour."""
    if not EQUIVALENTS.exists():
        return {}
    entries = tomllib.loads(EQUIVALENTS.read_text()).get("equivalent", [])
    return {entry["mutant"]: entry["reason"] for entry in entries}


Row = tuple[str, int, int, int, str]  # file, killed, mutants, equivalent, score


def report(outcomes: list[Outcome], equivalents: dict[str, str], *, markdown: bool) -> bool:
    """Print the score per file and the survivors; ``True`` when no non-equivalent mutant survived."""
    rows: list[Row] = []
    for module in sorted({o.mutant.module for o in outcomes}):
        mine = [o for o in outcomes if o.mutant.module == module]
        counted = [o for o in mine if o.mutant.key not in equivalents]
        killed = [o for o in counted if o.status != "survived"]
        rows.append((module, len(killed), len(mine), len(mine) - len(counted), _score(len(killed), len(counted))))
    killed_all, total_all = sum(row[1] for row in rows), sum(row[2] for row in rows)
    equivalent_all = sum(row[3] for row in rows)
    rows.append(("all", killed_all, total_all, equivalent_all, _score(killed_all, total_all - equivalent_all)))
    _table(rows, markdown=markdown)
    if markdown:
        print("\n| equivalent mutant | why it changes no behaviour |\n|---|---|")
        for outcome in outcomes:
            if outcome.mutant.key in equivalents:
                key = outcome.mutant.key.replace("|", "\\|")
                print(f"| `{key}` | {' '.join(equivalents[outcome.mutant.key].split())} |")
    survivors = [o for o in outcomes if o.status == "survived" and o.mutant.key not in equivalents]
    for outcome in survivors:
        print(f"SURVIVED line {outcome.mutant.line}: {outcome.mutant.key}")
    for outcome in outcomes:
        if outcome.status != "survived" and outcome.mutant.key in equivalents:
            print(f"LISTED AS EQUIVALENT BUT KILLED: {outcome.mutant.key}")
    if len({o.mutant.module for o in outcomes}) == len(list(_targets([]))):
        for key in sorted(set(equivalents) - {o.mutant.key for o in outcomes}):
            print(f"LISTED AS EQUIVALENT BUT NO SUCH MUTANT: {key}")
    return not survivors


def _table(rows: list[Row], *, markdown: bool) -> None:
    if markdown:
        print("| file | killed | mutants | equivalent | score (killed / non-equivalent) |\n|---|---:|---:|---:|---:|")
        for name, dead, count, same, score in rows:
            bold = "**" if name == "all" else ""
            print(f"| {bold}{name}{bold} | {dead} | {count} | {same} | {bold}{score}{bold} |")
        return
    print(f"{'file':<18}{'killed':>8}{'total':>8}{'equiv.':>8}{'score':>9}")
    for name, dead, count, same, score in rows:
        print(f"{name:<18}{dead:>8}{count:>8}{same:>8}{score:>9}")


def _score(killed: int, counted: int) -> str:
    return f"{100 * killed / counted:.1f} %" if counted else "-"


def _targets(names: list[str]) -> Iterator[Path]:
    for path in sorted(DOMAIN.glob("*.py")):
        if path.name == "__init__.py":
            continue
        if not names or path.stem in names or path.name in names:
            yield path


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules of app/domain to mutate (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per mutant (default 10x a clean run)")
    parser.add_argument("--list", action="store_true", help="list the mutants and run nothing")
    parser.add_argument("--show", metavar="TEXT", help="print the diff of each mutant whose key contains TEXT")
    parser.add_argument("--markdown", action="store_true", help="print the score table as Markdown")
    parser.add_argument("--json", type=Path, help="write every outcome to this file")
    parser.add_argument("--tests", type=Path, default=UNIT_TESTS, help="the unit test folder (default tests/unit)")
    args = parser.parse_args()
    targets = list(_targets(args.modules))
    if args.show:
        for path in targets:
            for mutant in mutants_of(path):
                if args.show in mutant.key:
                    print(f"line {mutant.line}: {mutant.key}")
                    print(diff(path, mutant.node))
        return
    if args.list:
        for path in targets:
            for mutant in mutants_of(path):
                print(f"line {mutant.line}: {mutant.key}")
        return
    outcomes = run(targets, args.jobs, args.timeout, args.tests.resolve())
    if args.json:
        args.json.write_text(
            json.dumps(
                [{"key": o.mutant.key, "line": o.mutant.line, "status": o.status} for o in outcomes],
                ensure_ascii=False,
                indent=1,
            )
        )
    if not report(outcomes, load_equivalents(), markdown=args.markdown):
        sys.exit(1)


if __name__ == "__main__":
    main()
