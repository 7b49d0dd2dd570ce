"""Mutation testing of the numeric core: does the suite fail when the numbers are wrong?

    nice python -m bench.mutation                      # every target module (long: see docs/mutation.md)
    nice python -m bench.mutation --module scene       # one module
    python -m bench.mutation --module scene --list     # the mutants only, no tests run
    python -m bench.mutation --issue                   # the one-line changes named in issue #10

Each mutant is one small change to one module's syntax tree (an operator flipped, a comparison
swapped, a constant moved by one, a condition negated, a statement dropped). The driver imports
the library and the tests once, then forks one child per mutant: the child swaps the mutated
functions' code objects into the live functions (in the library and in the pack copy that the
node tests import), runs the module's test subset with ``pytest -x`` and reports. A mutant is
*killed* when a test fails (or the run exceeds the timeout, or the mutated module no longer
imports), *survived* when the subset passes. Survivors are either killed by new tests or listed
in ``docs/mutation.md`` with the reason they cannot change a result (equivalent).

Only code inside functions is mutated (module constants are read at import time by other
modules, so a swapped code object would not reach them); docstrings, log and error strings
are left alone (the error-message tests check those).
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import signal
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the tests that must notice a wrong number in it: fast, focused subsets, the
# quickest first (``pytest -x`` stops at the first failure)
FAST = "tests/test_parity_fast.py"
TARGETS = {
    "sampling": [FAST, "tests/test_rules.py::test_sampling_progress_counts_steps_done",
                 "tests/test_golden_parity.py", "tests/test_reroll.py"],
    "attention": [FAST, "tests/test_attention_modes.py", "tests/test_precision.py"],
    "dit": [FAST, "tests/test_attention_modes.py", "tests/test_golden_parity.py"],
    "vae": [FAST, "tests/test_decode_fields.py", "tests/test_golden_parity.py"],
    "conditioning": [FAST, "tests/test_conditioning.py", "tests/test_golden_parity.py"],
    "meshing": ["tests/test_decode_fields.py", "tests/test_hierarchical.py", "tests/test_rules.py",
                "tests/test_golden_parity.py"],
    "hierarchical": ["tests/test_decode_fields.py", "tests/test_hierarchical.py"],
    "scene": ["tests/test_rules.py::test_unique_names", "tests/test_rules.py::test_scene_nodes_are_named_uniquely",
              "tests/test_rules.py::test_node_names_use_the_library_rule"],
    "inputs.labels": [FAST, "tests/test_bad_inputs.py", "tests/test_golden_parity.py"],
}

# The one-line changes that left the whole suite green before issue #10 (each must fail a test).
ISSUE_CHANGES = [
    ("hierarchical", "finest-level smoothing ring off",
     "pts |= dilate((mn <= level) & (mx >= level), 2)", "pass"),
    ("hierarchical", "no band dilation in the closure loop",
     "need = dilate(straddling_cells(vals, level), band)", "need = straddling_cells(vals, level)"),
    ("meshing", "an empty instance gets the default box, not the previous one",
     "        if box is not None:\n            lo, hi = box", "        lo, hi = box if box is not None else (BBOX_MIN, BBOX_MAX)"),
    ("scene", "instance names not de-duplicated",
     "        while name in taken or (name != n and name in literal):", "        while False:"),
    ("testing", "random norm scales near 0 (the component-name bug)",
     "p.normal_(1.0, 0.25)", "p.normal_(0.0, 0.02)"),
]
ISSUE_TESTS = {"hierarchical": TARGETS["hierarchical"], "meshing": TARGETS["meshing"], "scene": TARGETS["scene"],
               "testing": ["tests/test_attention_modes.py"]}

BINOPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr}
CMPOPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
          ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
SKIP_CALLS = {"warning", "warn", "info", "debug", "write", "print", "flush"}


def module_path(name: str) -> Path:
    return ROOT / "midi_model" / (name.replace(".", "/") + ".py")


def _is_docstring(node, parent) -> bool:
    body = getattr(parent, "body", None)
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str) and body and body[0] is node)


def _in_raise_or_fstring(stack) -> bool:
    return any(isinstance(s, (ast.Raise, ast.JoinedStr)) for s in stack)


def find_mutants(tree: ast.Module):
    """-> [(path of child indices, kind, description, lineno)], only inside function bodies."""
    found = []

    def visit(node, path, stack, in_func):
        kids = list(ast.iter_child_nodes(node))
        if stack and _is_annotation(node, stack[-1]):
            return  # not evaluated (from __future__ import annotations)
        in_func = in_func or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if in_func and not _in_raise_or_fstring(stack):
            line = getattr(node, "lineno", 0)
            if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
                found.append((path, "binop", f"{type(node.op).__name__} -> {BINOPS[type(node.op)].__name__}", line))
            elif isinstance(node, ast.AugAssign) and type(node.op) in BINOPS:
                found.append((path, "augop", f"{type(node.op).__name__}= -> {BINOPS[type(node.op)].__name__}=", line))
            elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in CMPOPS:
                found.append((path, "cmp", f"{type(node.ops[0]).__name__} -> {CMPOPS[type(node.ops[0])].__name__}",
                              line))
            elif isinstance(node, ast.BoolOp):
                found.append((path, "boolop", f"{type(node.op).__name__} -> {'Or' if isinstance(node.op, ast.And) else 'And'}", line))
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
                found.append((path, "unary", f"drop {type(node.op).__name__}", line))
            elif (isinstance(node, ast.Constant) and type(node.value) in (int, float)
                  and not isinstance(stack[-1] if stack else None, ast.Subscript)):
                found.append((path, "const+", f"{node.value!r} -> {node.value!r} + 1", line))
            elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
                found.append((path, "bool", f"{node.value} -> {not node.value}", line))
            elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
                found.append((path, "negate", "negate condition", line))
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return)) and stack:
                parent = stack[-1]
                if not _is_docstring(node, parent) and not _is_logging(node):
                    found.append((path, "drop", f"drop {type(node).__name__}", line))
        for i, kid in enumerate(kids):
            visit(kid, path + (i,), stack + [node], in_func)

    visit(tree, (), [], False)
    return found


def _is_annotation(node, parent) -> bool:
    if isinstance(parent, ast.arg) and node is parent.annotation:
        return True
    if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and node is parent.returns:
        return True
    return isinstance(parent, ast.AnnAssign) and node is parent.annotation


def _is_logging(node) -> bool:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        f = node.value.func
        return isinstance(f, ast.Attribute) and f.attr in SKIP_CALLS
    return False


def _node_at(tree, path):
    node, parent = tree, None
    for i in path:
        parent, node = node, list(ast.iter_child_nodes(node))[i]
    return node, parent


def apply_mutant(tree, mutant):
    path, kind, _, _ = mutant
    tree = copy.deepcopy(tree)
    node, parent = _node_at(tree, path)
    if kind in ("binop", "augop"):
        node.op = BINOPS[type(node.op)]()
    elif kind == "cmp":
        node.ops = [CMPOPS[type(node.ops[0])]()]
    elif kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "unary":
        _replace(parent, node, node.operand)
    elif kind in ("const+", "const-"):
        node.value = node.value + (1 if kind == "const+" else -1)
    elif kind == "bool":
        node.value = not node.value
    elif kind == "negate":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif kind == "drop":
        if isinstance(node, ast.Return):
            _replace(parent, node, ast.Return(value=None) if node.value is not None else ast.Pass())
        else:
            _replace(parent, node, ast.Pass())
    return ast.fix_missing_locations(tree)


def _replace(parent, old, new):
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, v in enumerate(value):
                if v is old:
                    value[i] = new
                    return
    raise RuntimeError("node not found in its parent")


# ---- swapping code into the live modules -------------------------------------------------

def _functions(ns: dict, prefix=""):
    """qualified name -> function, for module-level functions and methods of module classes."""
    out = {}
    for name, obj in ns.items():
        if isinstance(obj, types.FunctionType):
            out[prefix + name] = obj
        elif isinstance(obj, type) and prefix == "":
            for k, v in vars(obj).items():
                if isinstance(v, (staticmethod, classmethod)):
                    v = v.__func__
                if isinstance(v, property):
                    for part, fn in (("fget", v.fget), ("fset", v.fset)):
                        if fn is not None:
                            out[f"{name}.{k}.{part}"] = fn
                elif isinstance(v, types.FunctionType):
                    out[f"{name}.{k}"] = v
    return out


def _innermost(fn):
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def swap_in(modname: str, tree: ast.Module) -> int:
    """Compile the mutated module and move its functions' code into the live ones (in
    ``midi_model.<mod>`` and the test pack's ``comfyui_midi.midi_model.<mod>``)."""
    swapped = 0
    for full in (f"midi_model.{modname}", f"comfyui_midi.midi_model.{modname}"):
        live = sys.modules.get(full)
        if live is None:
            continue
        ns = {"__name__": full, "__package__": full.rpartition(".")[0], "__file__": live.__file__}
        exec(compile(tree, live.__file__, "exec"), ns)
        new = _functions(ns)
        for qual, fn in _functions(vars(live)).items():
            if qual in new and fn.__module__ == full:
                # through decorators (torch.no_grad keeps the original as __wrapped__)
                fn, mutated = _innermost(fn), _innermost(new[qual])
                if fn.__code__.co_freevars != mutated.__code__.co_freevars:
                    raise RuntimeError(f"{qual}: free variables changed")
                fn.__code__ = mutated.__code__
                fn.__defaults__, fn.__kwdefaults__ = mutated.__defaults__, mutated.__kwdefaults__
                swapped += 1
    return swapped


# ---- running -------------------------------------------------------------------------------

def preload():
    """Import torch, the library, the pack and the test modules once (children inherit them)."""
    os.chdir(ROOT)
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import pytest  # noqa: F401
    import torch

    torch.set_num_threads(1)
    import conftest  # noqa: F401  (imports the pack as comfyui_midi)
    import importlib

    for name in list(TARGETS) + ["pipeline", "checkpoint", "testing"]:
        importlib.import_module(f"midi_model.{name}")
        try:
            importlib.import_module(f"comfyui_midi.midi_model.{name}")
        except ImportError:
            pass
    import transformers  # noqa: F401
    from transformers import CLIPVisionModelWithProjection, Dinov2Model  # noqa: F401
    import trimesh  # noqa: F401
    import skimage.measure  # noqa: F401

    # The golden pipeline and arrays, loaded once: the children's session fixtures return
    # these. Functions that run while loading are recorded: a mutant in one of them gets a
    # fresh load in its child (see ``run_child``).
    import numpy as np

    from midi_model.pipeline import MIDIPipeline

    called = set()

    def tracer(frame, event, arg):
        if event == "call":
            called.add((frame.f_code.co_filename, frame.f_code.co_firstlineno))
        return None

    sys.setprofile(lambda f, e, a: tracer(f, e, a) if e == "call" else None)
    try:
        pipe = MIDIPipeline.from_pretrained(conftest.GOLDEN_MODEL, device="cpu", dtype="fp32")
    finally:
        sys.setprofile(None)
    golden = dict(np.load(conftest.GOLDEN / "reference_run.npz"))
    PRELOADED.update(pipe=pipe, golden=golden, load_time=called)


PRELOADED = {}


def use_preloaded_fixtures():
    """Point the conftest's golden fixtures at the parent's objects (children only)."""
    import conftest
    import pytest

    @pytest.fixture(scope="session")
    def golden_pipe():
        return PRELOADED["pipe"]

    @pytest.fixture(scope="session")
    def golden():
        return PRELOADED["golden"]

    conftest.golden_pipe, conftest.golden = golden_pipe, golden


def runs_at_load(modname: str, tree: ast.Module, line: int) -> bool:
    """Is the innermost function around ``line`` one that ran while the golden model loaded?"""
    best = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno <= line <= node.end_lineno:
            if best is None or node.lineno > best.lineno:
                best = node
    if best is None:
        return True
    first = best.decorator_list[0].lineno if best.decorator_list else best.lineno
    return (str(module_path(modname)), first) in PRELOADED.get("load_time", ())


def run_child(modname, tree, tests, timeout, fresh_load: bool = False) -> str:
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            signal.alarm(timeout)
            try:
                swap_in(modname, tree)
            except Exception:
                os._exit(4)  # the mutant does not compile / import: killed
            import pytest

            if not fresh_load:
                use_preloaded_fixtures()
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests])
        finally:
            os._exit(int(code))
    deadline = time.time() + timeout + 5
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)
    if os.WIFSIGNALED(status):
        return "timeout" if os.WTERMSIG(status) == signal.SIGALRM else "killed"
    code = os.WEXITSTATUS(status)
    return {0: "survived", 4: "error", 5: "no-tests"}.get(code, "killed")


def existing(tests):
    return [t for t in tests if (ROOT / t.split("::")[0]).exists()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mutation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", choices=list(TARGETS), help="module(s) to mutate (default: all)")
    ap.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    ap.add_argument("--issue", action="store_true", help="run the issue's one-line changes only")
    ap.add_argument("--timeout", type=int, default=0,
                    help="seconds per mutant (a hang counts as killed); default: 3x the unmutated run + 20")
    ap.add_argument("--only", help="comma-separated mutant ids (module:index) to run")
    ap.add_argument("--sample", type=int, default=0,
                    help="run this many mutants per module, drawn with --seed (0: all of them)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    if args.issue:
        preload()
        results = []
        for mod, what, old, new in ISSUE_CHANGES:
            src = module_path(mod).read_text()
            if src.count(old) != 1:
                results.append({"module": mod, "change": what, "result": "not found (code changed)"})
                print(f"{mod:14s} {what}: not found in the code (it was restructured)", flush=True)
                continue
            tree = ast.parse(src.replace(old, new))
            res = run_child(mod, tree, existing(ISSUE_TESTS[mod]), args.timeout or 600, fresh_load=True)
            results.append({"module": mod, "change": what, "result": res})
            print(f"{mod:14s} {what}: {res}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
        return 0 if all(r["result"] in ("killed", "timeout", "error") for r in results) else 1

    modules = args.module or list(TARGETS)
    only = set(args.only.split(",")) if args.only else None
    if not args.list:
        preload()
    summary, results = {}, []
    for mod in modules:
        src = module_path(mod).read_text()
        tree = ast.parse(src)
        mutants = find_mutants(tree)
        lines = src.splitlines()
        tests = existing(TARGETS[mod])
        counts = {}
        timeout = args.timeout
        if not args.list and not timeout:
            t0 = time.time()
            base = run_child(mod, tree, tests, 900)
            if base != "survived":
                raise SystemExit(f"{mod}: the unmutated code fails its tests ({base}); fix that first")
            timeout = int(3 * (time.time() - t0)) + 20
            print(f"{mod}: unmutated run {time.time() - t0:.0f} s, timeout {timeout} s", flush=True)
        t0 = time.time()
        chosen = set(range(len(mutants)))
        if args.sample and args.sample < len(mutants):
            import random

            chosen = set(random.Random(f"{args.seed}:{mod}").sample(sorted(chosen), args.sample))
        for i, m in enumerate(mutants):
            mid = f"{mod}:{i}"
            if (only is not None and mid not in only) or (only is None and i not in chosen):
                continue
            code = lines[m[3] - 1].strip() if m[3] else ""
            if args.list:
                print(f"{mid:18s} line {m[3]:4d} {m[2]:24s} | {code}")
                continue
            fresh = runs_at_load(mod, tree, m[3])
            res = run_child(mod, apply_mutant(tree, m), tests, timeout, fresh_load=fresh)
            counts[res] = counts.get(res, 0) + 1
            print(f"{res[0]}", end="", flush=True)
            results.append({"id": mid, "line": m[3], "mutation": m[2], "code": code, "result": res})
            if res == "survived":
                print(f"SURVIVED {mid:18s} line {m[3]:4d} {m[2]:24s} | {code}", flush=True)
        if not args.list:
            summary[mod] = dict(counts, mutants=sum(counts.values()), generated=len(mutants),
                                seconds=round(time.time() - t0))
            print(f"== {mod}: {summary[mod]}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
