"""Mutation testing of the numeric core: does the suite fail when the numbers are wrong?

    nice python -m bench.mutation                      # every target module (long: see docs/mutation.md)
    nice python -m bench.mutation --module scene       # one module
    python -m bench.mutation --module scene --list     # the mutants only, no tests run
    python -m bench.mutation --issue                   # the one-line changes named in issue #10
    nice python -m bench.mutation --module hierarchical --tests tests/test_hierarchical_parts.py   # one test file alone

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
    "sampling": [FAST, "tests/test_sampler_contract.py", "tests/test_rules.py::test_sampling_progress_counts_steps_done",
                 "tests/test_golden_parity.py", "tests/test_reroll.py"],
    "attention": [FAST, "tests/test_model_parts.py", "tests/test_attention_modes.py", "tests/test_precision.py"],
    "dit": [FAST, "tests/test_model_parts.py", "tests/test_attention_modes.py", "tests/test_golden_parity.py"],
    "vae": [FAST, "tests/test_model_parts.py", "tests/test_decode_fields.py", "tests/test_golden_parity.py"],
    "conditioning": ["tests/test_conditioning.py", FAST, "tests/test_golden_parity.py"],
    "meshing": ["tests/test_meshing_official.py", "tests/test_decode_fields.py", "tests/test_hierarchical.py",
                "tests/test_rules.py", "tests/test_golden_parity.py",
                "tests/test_loader.py::test_decode_out_of_memory_retries_with_smaller_chunks",
                "tests/test_decoder_exact.py::test_cpu_query_blocks_give_the_official_chunks_values_bit_for_bit"],
    "hierarchical": ["tests/test_hierarchical_parts.py", "tests/test_decode_fields.py", "tests/test_hierarchical.py",
                     "tests/test_decoder_exact.py"],
    "scene": ["tests/test_scene_file.py", "tests/test_rules.py", "tests/test_texturing.py",
              "tests/test_bad_inputs.py::test_export_glb_refuses_an_existing_file"],
    "inputs.labels": ["tests/test_label_maps.py", FAST, "tests/test_bad_inputs.py", "tests/test_segmentation_import.py",
                      "tests/test_golden_parity.py"],
}

# The one-line changes that left the whole suite green before issue #10 (each must fail a test).
ISSUE_CHANGES = [
    ("hierarchical", "finest-level smoothing ring off",
     "pts = dilate(cell_corners(cell_any(above) & cell_any(below)), 1) | cell_corners(raw)",
     "pts = cell_corners(cell_any(above) & cell_any(below)) | cell_corners(raw)"),
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
        if isinstance(node, ast.Return) and not _returns_none(node):
            _replace(parent, node, ast.Return(value=None))  # the value dropped
        else:  # a statement, or a ``return None``: gone (an early return falls through)
            _replace(parent, node, ast.Pass())
    return ast.fix_missing_locations(tree)


def _returns_none(node: ast.Return) -> bool:
    return node.value is None or (isinstance(node.value, ast.Constant) and node.value.value is None)


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
        # module data computed at import by a (mutated) function, e.g. a table built by a helper:
        # the live module gets the value the mutated module computed
        for name, value in ns.items():
            old = vars(live).get(name)
            if name.startswith("__") or name not in vars(live) or _is_code(value) or _same(value, old):
                continue
            setattr(live, name, value)
            swapped += 1
    return swapped


def _is_code(value) -> bool:
    return isinstance(value, (types.FunctionType, types.ModuleType, type)) or callable(value)


def _same(a, b) -> bool:
    """Equal plain data (numbers, strings, containers of them, arrays); anything else counts as
    the same (only computed tables are worth replacing)."""
    import numpy as np
    import torch

    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, (int, float, str, bytes, bool, tuple, list, dict, set, frozenset, type(None))):
        try:
            return bool(a == b)
        except Exception:  # containers of arrays
            return True
    return True


# ---- running -------------------------------------------------------------------------------

def preload():
    """Import torch, the library, the pack and the test helpers once (children inherit them)."""
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
    # fresh load in its child.
    import numpy as np

    from midi_model.pipeline import MIDIPipeline

    called = set()

    def tracer(frame, event, arg):
        if event == "call":
            called.add((frame.f_code.co_filename, frame.f_code.co_firstlineno))
        return None

    sys.setprofile(tracer)
    try:
        pipe = MIDIPipeline.from_pretrained(conftest.GOLDEN_MODEL, device="cpu", dtype="fp32")
    finally:
        sys.setprofile(None)
    golden = dict(np.load(conftest.GOLDEN / "reference_run.npz"))
    PRELOADED.update(pipe=pipe, golden=golden, load_time=called)
    use_preloaded_fixtures()


PRELOADED = {}


def use_preloaded_fixtures():
    """Point the conftest's golden fixtures at the parent's objects; a child that runs a mutant
    of a load-time function sets ``PRELOADED["fresh"]`` and loads its own (mutated) pipeline."""
    import conftest
    import pytest

    @pytest.fixture(scope="session")
    def golden_pipe():
        if PRELOADED.get("fresh"):
            from midi_model.pipeline import MIDIPipeline

            return MIDIPipeline.from_pretrained(conftest.GOLDEN_MODEL, device="cpu", dtype="fp32")
        return PRELOADED["pipe"]

    @pytest.fixture(scope="session")
    def golden():
        return PRELOADED["golden"]

    conftest.golden_pipe, conftest.golden = golden_pipe, golden


def runs_at_load(modname: str, tree: ast.Module, line: int) -> bool:
    """Is the innermost function around ``line`` one that ran while the golden model loaded?"""
    best = _function_at(tree, line)
    if best is None:
        return True
    first = best.decorator_list[0].lineno if best.decorator_list else best.lineno
    return (str(module_path(modname)), first) in PRELOADED.get("load_time", ())


def import_time_functions(modname: str) -> set:
    """First lines of the module's functions that its own top-level code calls (tables built by a
    helper at import): their mutants reach the tests only through that data, so every test of the
    subset runs for them (swap_in gives the live module the mutated data)."""
    path = str(module_path(modname))
    called = set()

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == path:
            called.add(frame.f_code.co_firstlineno)

    live = sys.modules[f"midi_model.{modname}"]
    ns = {"__name__": live.__name__, "__package__": live.__package__, "__file__": path}
    code = compile(module_path(modname).read_text(), path, "exec")
    sys.setprofile(tracer)
    try:
        exec(code, ns)
    finally:
        sys.setprofile(None)
    return called - {1}  # the module body itself


def runs_at_import(tree: ast.Module, line: int, import_time: set) -> bool:
    best = _function_at(tree, line)
    if best is None:
        return False
    first = best.decorator_list[0].lineno if best.decorator_list else best.lineno
    return first in import_time


def _function_at(tree, line):
    best = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno <= line <= node.end_lineno:
            if best is None or node.lineno > best.lineno:
                best = node
    return best


def mutant_lines(tree, mutant) -> set:
    """The source lines whose execution the mutant can change: the mutated node's own lines (for a
    negated if / while, its condition's); for a default value or decorator (evaluated when the
    module loads, read at every call), every line of the function's body."""
    node, _ = _node_at(tree, mutant[0])
    if isinstance(node, (ast.If, ast.While, ast.IfExp)):
        node = node.test
    fn = _function_at(tree, node.lineno)
    if fn is not None and node.lineno < fn.body[0].lineno:
        return set(range(fn.body[0].lineno, fn.end_lineno + 1))
    return set(range(node.lineno, node.end_lineno + 1))


# ---- line coverage: which test runs which line of the mutated module ---------------------------

class LineTracer:
    """sys.settrace line coverage of one file, per context (a test id, ``fixture:<name>`` while a
    fixture sets up, ``collect`` while pytest imports the test files)."""

    def __init__(self, filename: str):
        self.filename, self.stack, self.hits = filename, ["other"], {}

    def _global(self, frame, event, arg):
        if frame.f_code.co_filename == self.filename:
            return self._local
        return None

    def _local(self, frame, event, arg):
        if event == "line":
            self.hits.setdefault(self.stack[-1], set()).add(frame.f_lineno)
        return self._local

    def start(self):
        import threading

        threading.settrace(self._global)
        sys.settrace(self._global)

    def stop(self):
        import threading

        sys.settrace(None)
        threading.settrace(None)


class MutationPlugin:
    """Runs inside a pytest session in the parent: collection happens once; the normal test loop is
    replaced by the mutation loop (one forked child per mutant, running chosen items with
    ``runtestprotocol``)."""

    def __init__(self, mod, tree, mutants, chosen, args, lines):
        self.mod, self.tree, self.mutants, self.chosen, self.args, self.lines = mod, tree, mutants, chosen, args, lines
        self.tracer = LineTracer(str(module_path(mod)))
        self.results, self.summary = [], {}
        self.alone_ok = {}

    # collection runs in the parent: a line executed only then is marked (``collect``)
    def pytest_collection(self, session):
        self.tracer.stack.append("collect")
        self.tracer.start()

    def pytest_collection_finish(self, session):
        self.tracer.stop()
        self.tracer.stack.pop()

    def pytest_runtestloop(self, session):
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            raise SystemExit(f"{self.mod}: the test subset does not collect")
        items = list(session.items)
        self.run_module(items)
        return True

    @staticmethod
    def _fixture_stack_hook(tracer):
        import pytest

        class Hooks:
            @pytest.hookimpl(wrapper=True)
            def pytest_fixture_setup(self, fixturedef, request):
                tracer.stack.append("fixture:" + fixturedef.argname)
                try:
                    return (yield)
                finally:
                    tracer.stack.pop()

        return Hooks()

    def _run_items(self, items, timeout, tree=None, fresh=False, trace=False):
        """Fork; in the child swap the mutant in (if any) and run ``items`` in order, stopping at the
        first failure. ``timeout`` is CPU seconds (a busy machine does not make a mutant time out);
        the wall clock allows 10x that + 60 s of running. -> (result, failing test id or None, child's extra data)."""
        import resource

        from _pytest.runner import runtestprotocol

        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code, out = 3, {}
            try:
                os.close(rfd)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                resource.setrlimit(resource.RLIMIT_CPU, (timeout, timeout + 5))
                if tree is not None:
                    try:
                        swap_in(self.mod, tree)
                    except Exception:
                        os._exit(4)  # the mutant does not compile / import: killed
                PRELOADED["fresh"] = fresh
                tracer = None
                if trace:
                    tracer = self.tracer
                    tracer.stack[:] = ["other"]
                    tracer.hits = {}
                    items[0].config.pluginmanager.register(self._fixture_stack_hook(tracer), "mutation-trace")
                    tracer.start()
                durations, cpu, failed = {}, {}, None
                for k, item in enumerate(items):
                    nxt = items[k + 1] if k + 1 < len(items) else None
                    if tracer is not None:
                        tracer.stack.append(item.nodeid)
                    t, c = time.perf_counter(), time.process_time()
                    reports = runtestprotocol(item, log=False, nextitem=nxt)
                    durations[item.nodeid] = time.perf_counter() - t
                    cpu[item.nodeid] = time.process_time() - c
                    if tracer is not None:
                        tracer.stack.pop()
                    if any(r.failed for r in reports):
                        failed = item.nodeid
                        break
                if tracer is not None:
                    tracer.stop()
                    out["hits"] = {k: sorted(v) for k, v in tracer.hits.items()}
                    out["fixtures"] = {it.nodeid: list(it.fixturenames) for it in items}
                out.update(failed=failed, durations=durations, cpu=cpu)
                with os.fdopen(wfd, "w") as f:
                    json.dump(out, f)
                code = 1 if failed else 0
            finally:
                os._exit(code)
        os.close(wfd)
        import select

        # the wall clock as a backstop for a child that hangs without using CPU; time while the
        # child or this process is stopped (SIGSTOP, e.g. to free the CPU for a benchmark) does not count
        budget, used, chunks = 10 * timeout + 60, 0.0, []
        with os.fdopen(rfd, "rb") as f:  # the child writes at its end; EOF when it exits or dies
            while True:
                t = time.time()
                ready, _, _ = select.select([f], [], [], 1.0)
                dt = time.time() - t
                if dt < 3.0 and not _stopped(pid):
                    used += dt
                if ready:
                    chunk = os.read(f.fileno(), 1 << 20)
                    if not chunk:
                        break
                    chunks.append(chunk)
                elif used > budget:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return "timeout", None, {}
        _, status = os.waitpid(pid, 0)
        data = b"".join(chunks)
        extra = json.loads(data) if data else {}
        if os.WIFSIGNALED(status):
            res = "timeout" if os.WTERMSIG(status) == signal.SIGXCPU else "killed"
            return res, None, extra
        code = os.WEXITSTATUS(status)
        return {0: "survived", 1: "killed", 4: "error"}.get(code, "killed"), extra.get("failed"), extra

    def run_module(self, items):
        mod, args = self.mod, self.args
        by_id = {it.nodeid: it for it in items}
        if args.list:
            for i in sorted(self.chosen):
                m = self.mutants[i]
                print(f"{mod}:{i:<14d} line {m[3]:4d} {m[2]:24s} | {self.lines[m[3] - 1].strip() if m[3] else ''}")
            return
        # one traced run of the unmutated code: per-test lines and durations, and it must pass
        t0 = time.time()
        res, failed, cov = self._run_items(items, 3600, trace=True)
        if res != "survived":
            raise SystemExit(f"{mod}: the unmutated code fails its tests ({res}: {failed}); fix that first")
        base = time.time() - t0
        durations, cpu = cov["durations"], cov["cpu"]
        covering = {}  # line -> test ids that execute it, or use a fixture that does
        users = {}
        for nodeid, names in cov["fixtures"].items():
            for n in names:
                users.setdefault("fixture:" + n, []).append(nodeid)
        for ctx, lines in cov["hits"].items():
            tests = [ctx] if ctx in by_id else users.get(ctx, [])
            for ln in lines:
                covering.setdefault(ln, set()).update(tests)
        collect_lines = set(self.tracer.hits.get("collect", ()))
        full_timeout = args.timeout or int(3 * sum(cpu.values())) + 10
        print(f"{mod}: {len(items)} tests, traced unmutated run {base:.0f} s; "
              f"{len(covering)} lines of the module run under them", flush=True)
        counts, t0 = {}, time.time()
        import_time = import_time_functions(mod)
        for i, m in enumerate(self.mutants):
            if i not in self.chosen:
                continue
            mid, code = f"{mod}:{i}", (self.lines[m[3] - 1].strip() if m[3] else "")
            fresh = runs_at_load(mod, self.tree, m[3])
            lines = mutant_lines(self.tree, m)
            mutated = apply_mutant(self.tree, m)
            if args.all_tests or fresh or lines & collect_lines or runs_at_import(self.tree, m[3], import_time):
                chosen, how = items, "all"
            else:
                ids = set().union(*(covering.get(ln, set()) for ln in lines))
                chosen = sorted((by_id[t] for t in ids), key=lambda it: durations.get(it.nodeid, 0.0))
                how = "covering"
            if not chosen:
                res, killer = "uncovered", None
            else:
                timeout = args.timeout or int(3 * sum(cpu.get(it.nodeid, 0.0) for it in chosen)) + 10
                res, killer, _ = self._run_items(chosen, min(timeout, full_timeout), tree=mutated, fresh=fresh)
                if res == "killed" and killer and how == "covering" and not self._passes_alone(by_id[killer], full_timeout):
                    # the test fails alone on the unmutated code: judge the mutant on the whole subset
                    res, killer, _ = self._run_items(items, full_timeout, tree=mutated, fresh=fresh)
                    how = "all"
            counts[res] = counts.get(res, 0) + 1
            print(res[0], end="", flush=True)
            self.results.append({"id": mid, "line": m[3], "mutation": m[2], "code": code, "result": res,
                                 "tests_run": how if chosen else "none", "killed_by": killer})
            if res in ("survived", "uncovered"):
                print(f"{res.upper()} {mid:18s} line {m[3]:4d} {m[2]:24s} | {code}", flush=True)
        self.summary = dict(counts, mutants=sum(counts.values()), generated=len(self.mutants),
                            seconds=round(time.time() - t0))
        print(f"\n== {mod}: {self.summary}", flush=True)

    def _passes_alone(self, item, timeout) -> bool:
        if item.nodeid not in self.alone_ok:
            self.alone_ok[item.nodeid] = self._run_items([item], timeout)[0] == "survived"
        return self.alone_ok[item.nodeid]


def _stopped(pid) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"
    except (OSError, IndexError):
        return False


def existing(tests):
    return [t for t in tests if (ROOT / t.split("::")[0]).exists()]


def run_issue_changes(args) -> int:
    results = []
    for mod, what, old, new in ISSUE_CHANGES:
        src = module_path(mod).read_text()
        if src.count(old) != 1:
            results.append({"module": mod, "change": what, "result": "not found (code changed)"})
            print(f"{mod:14s} {what}: not found in the code (it was restructured)", flush=True)
            continue
        plugin = MutationPlugin(mod, ast.parse(src.replace(old, new)), [], set(), args, [])
        plugin.run_module = lambda items, p=plugin: p.results.append(
            p._run_items(items, args.timeout or 600, tree=p.tree, fresh=True)[:2])
        _pytest_session(existing(ISSUE_TESTS[mod]), plugin)
        res, killer = plugin.results[0] if plugin.results else ("error", None)
        results.append({"module": mod, "change": what, "result": res, "killed_by": killer})
        print(f"{mod:14s} {what}: {res}" + (f" ({killer})" if killer else ""), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0 if all(r["result"] in ("killed", "timeout", "error") for r in results) else 1


def _pytest_session(tests, plugin):
    import pytest

    pytest.main(["-q", "-s", "-p", "no:cacheprovider", "--no-header", *tests], plugins=[plugin])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mutation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", choices=list(TARGETS), help="module(s) to mutate (default: all)")
    ap.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    ap.add_argument("--issue", action="store_true", help="run the issue's one-line changes only")
    ap.add_argument("--timeout", type=int, default=0,
                    help="CPU seconds per mutant (a hang counts as killed); default: 3x the CPU time of its "
                         "tests in the traced unmutated run + 10")
    ap.add_argument("--only", help="comma-separated mutant ids (module:index) to run")
    ap.add_argument("--sample", type=int, default=0,
                    help="run this many mutants per module, drawn with --seed (0: all of them)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--all-tests", action="store_true",
                    help="run the module's whole test subset for every mutant (default: only the tests that "
                         "execute the mutated line, fastest first)")
    ap.add_argument("--tests", help="comma-separated test files / node ids to run instead of the module's subset "
                                    "(e.g. one new test file alone: which mutants it kills by itself)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    if args.list:
        for mod in args.module or list(TARGETS):
            src = module_path(mod).read_text()
            mutants = find_mutants(ast.parse(src))
            plugin = MutationPlugin(mod, None, mutants, _chosen(mod, mutants, args), args, src.splitlines())
            plugin.run_module([])
        return 0
    preload()
    if args.issue:
        return run_issue_changes(args)

    summary, results = {}, []
    for mod in args.module or list(TARGETS):
        src = module_path(mod).read_text()
        tree = ast.parse(src)
        mutants = find_mutants(tree)
        plugin = MutationPlugin(mod, tree, mutants, _chosen(mod, mutants, args), args, src.splitlines())
        _pytest_session(args.tests.split(",") if args.tests else existing(TARGETS[mod]), plugin)
        if not plugin.summary:
            raise SystemExit(f"{mod}: the mutation run did not complete (see the pytest output above)")
        summary[mod], results = plugin.summary, results + plugin.results
        if args.out:
            Path(args.out).write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    return 0


def _chosen(mod, mutants, args) -> set:
    if args.only:
        return {int(x.split(":")[-1]) for x in args.only.split(",") if x.rpartition(":")[0] == mod}
    chosen = set(range(len(mutants)))
    if args.sample and args.sample < len(mutants):
        import random

        chosen = set(random.Random(f"{args.seed}:{mod}").sample(sorted(chosen), args.sample))
    return chosen


if __name__ == "__main__":
    sys.exit(main())
