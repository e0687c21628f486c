"""Hyperparameters of one EG-CFG agent, as a frozen dataclass. Every field has a command-line flag,
made from the field itself (``cli.add_config_flags``): its name (or ``FLAGS``), type, default and the
help text in ``HELP``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from .errors import EgcfgError
from .prompts import FORMATS, STYLES

# The paper's per-agent schedule: try gamma values in order, stop at the first passing program.
GAMMA_SCHEDULE = (0.0, 0.5, 1.0, 3.0)
FLAGS = {"run_timeout": "timeout", "gammas": "gamma"}  # fields whose CLI flag has another name
SHORT = {"candidates": "-s", "horizon": "-d", "temperature": "-t"}  # the paper's letters
HELP = {
    "gammas": "guidance strength, or a comma list tried in order until the tests pass (default: 0,0.5,1,3)",
    "candidates": "candidates sampled per line (s)",
    "horizon": "lines each candidate writes beyond the current one (d)",
    "temperature": "candidate sampling temperature (t)",
    "top_p": "candidate nucleus (top-p)",
    "prompt_style": "instruct (few-shot) or long-code (many short lines)",
    "prompt_format": "how the chat is built: auto (evalplus where the task gives a signature and docstring, as "
                     "HumanEval does, one-shot otherwise), one-shot (a worked example; a given signature is continued), "
                     "one-shot-free (the answer writes the signature too), zero-shot (no example), or evalplus "
                     "(EvalPlus's instruction prompt for chat models)",
    "max_tokens": "generated tokens per attempt",
    "max_line_tokens": "a line of more tokens ends the attempt (degenerate output)",
    "signal_budget": "token budget of the trace signal",
    "seed": "candidate sampling seed",
    "run_timeout": "seconds per sandboxed run (a program's visible-test check)",
    "trace_timeout": "seconds per traced candidate run (at most --timeout): a candidate still running then is "
                     "shown in the signal as timed out, with its trace so far",
    "always_refresh": "build the signal even at gamma 0 (diagnostics)",
    "resample_duplicates": "rounds of re-sampling for candidates that repeat another's program (or make none), "
                           "so that the signal holds up to s different programs (0: the s samples as drawn, as "
                           "in the paper)",
    "accept_candidates": "an extension of the method, on by default: a sampled candidate that passes every visible "
                         "test ends the attempt as its program (MBPP 500, one agent: +5.4 points, 28 tasks won and 1 "
                         "lost; benchmarks/results/weak_spots.md); --no-accept-candidates is the paper's method, where "
                         "candidates only feed the signal",
    "n_ctx": "model context in tokens, shared by p_sol, p_dyn and the candidates",
    "sampling_control": "the equal-compute control (bench --method sampling): each gamma > 0 attempt is a "
                        "program sampled at the agent's temperature and top-p instead, with no guidance",
}
NOT_FLAGS = ("sampling_control",)  # set by bench --method sampling, not a flag of its own
MAX_TIMEOUT = 3600.0  # seconds per sandboxed run: beyond it a "time limit" is a typo (and overflows timers)
# Settings whose default changed, with the value that runs which did not record them ran with
# (a resumed run is compared against these, not against today's defaults).
# (trace_timeout: before it existed, traced runs had the run timeout; min(MAX_TIMEOUT, run_timeout) is that)
LEGACY = {"accept_candidates": False, "resample_duplicates": 0, "prompt_format": "one-shot", "trace_timeout": MAX_TIMEOUT}


@dataclass(frozen=True)
class Config:
    gammas: tuple[float, ...] = GAMMA_SCHEDULE  # guidance strengths tried in order (--gamma 0,0.5,1,3)
    candidates: int = 3            # s: continuations sampled per refresh
    horizon: int = 3               # d: lines each candidate writes beyond the current one
    temperature: float = 0.7       # t: candidate sampling temperature
    top_p: float = 0.95            # nucleus for candidate sampling
    prompt_style: str = "instruct"  # instruct | long-code
    prompt_format: str = "auto"    # prompts.FORMATS (one-shot until 2026-12-06)
    max_tokens: int = 512          # generated tokens per attempt
    max_line_tokens: int = 128     # a line longer than this ends the attempt (degenerate output)
    signal_budget: int = 768       # tokens of dynamic signal at most (1536 until 2026-11-26: benchmarks/results/speed.md)
    seed: int = 0
    run_timeout: float = 2.0       # seconds per sandboxed run
    # Candidates' traced runs stop sooner than a program's check. A visible test runs in milliseconds
    # even traced; a candidate still running after half a second is nearly always a loop that will
    # never end (a partial program), and on the 16-agent MBPP grid those runs, 0.4% of all, held 5.5
    # of the GPU machine's 16 cores for 2 s each (benchmarks/results/speed.json, "gpu_grid").
    trace_timeout: float = 0.5     # seconds per traced candidate run (2.0, the run timeout, until 2026-12-06)
    always_refresh: bool = False   # build the signal even at gamma 0 (diagnostics; tests use it)
    # Two answers to weak spots seen in the committed runs: at t 0.7 the s candidates were often one
    # program (the signal showed no alternative), and a candidate that already passed every visible
    # test was thrown away. Measured side by side on MBPP's 500 tasks (benchmarks/weak_spots.md):
    # accepting such a candidate won 28 tasks and lost 1 (an extension of the method, so on by
    # default and named in every report; --no-accept-candidates is the paper's method); re-sampling
    # duplicates won 10 and lost 4 for 23% more generated tokens, so it stays off.
    resample_duplicates: int = 0   # rounds of re-sampling the candidates that repeat a program
    accept_candidates: bool = True  # a candidate passing all visible tests is the attempt's program
    n_ctx: int = 8192              # model context shared by p_sol, p_dyn and the candidates
    # The control at equal compute (bench --method sampling): the schedule's gamma 0 attempt stays
    # greedy; every other attempt is a whole program sampled at temperature / top_p, no guidance.
    sampling_control: bool = False

    def __post_init__(self):
        # A list is taken as the tuple it means (a list would make the frozen Config unhashable);
        # a single number is a mistake worth a clear message, not a TypeError later.
        if isinstance(self.gammas, (int, float)):
            raise EgcfgError(f"gammas must be a sequence of numbers, e.g. (0.0, 1.0), not {self.gammas!r}")
        if isinstance(self.gammas, list):
            object.__setattr__(self, "gammas", tuple(self.gammas))

    def validate(self) -> "Config":
        # Types first (an agent grid file can hold anything), then ranges. A float that is nan or
        # inf passes every range test below by failing it silently (nan < 0 is False), so it is
        # refused here: nan guidance scores would pick token 0 everywhere.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "gammas":
                continue
            kind = {"int": int, "float": float, "str": str, "bool": bool}[f.type]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            name = f"{f.name} (--{FLAGS.get(f.name, f.name.replace('_', '-'))})"
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise EgcfgError(f"{name} must be {'an' if kind is int else 'a'} {kind.__name__}, not {value!r}")
            if kind is float and not math.isfinite(value):
                raise EgcfgError(f"{name} must be a finite number, not {value!r}")
        if not isinstance(self.gammas, tuple) or not self.gammas:
            raise EgcfgError("--gamma needs at least one value")
        if not all(isinstance(g, (int, float)) and not isinstance(g, bool) for g in self.gammas):
            raise EgcfgError(f"--gamma values must be numbers, not {list(self.gammas)!r}")
        if not all(math.isfinite(g) for g in self.gammas):
            raise EgcfgError("--gamma values must be finite numbers")
        if any(g < 0 for g in self.gammas):
            raise EgcfgError("--gamma values must be >= 0")
        if len(set(self.gammas)) != len(self.gammas):  # a repeat would decode the same attempt twice
            raise EgcfgError(f"--gamma values must be distinct, not {list(self.gammas)}")
        if self.candidates < 1:
            raise EgcfgError("--candidates must be at least 1")
        if self.resample_duplicates < 0:
            raise EgcfgError("--resample-duplicates must be >= 0")
        if self.horizon < 0:
            raise EgcfgError("--horizon must be >= 0")
        if self.temperature <= 0:
            raise EgcfgError("--temperature must be > 0")
        if not 0 < self.top_p <= 1:
            raise EgcfgError("--top-p must be in (0, 1]")
        if self.prompt_style not in STYLES:
            raise EgcfgError(f"--prompt-style must be one of {', '.join(STYLES)}")
        if self.prompt_format not in FORMATS:
            raise EgcfgError(f"--prompt-format must be one of {', '.join(FORMATS)}")
        if self.max_tokens < 1:
            raise EgcfgError("--max-tokens must be at least 1")
        check_timeout(self.run_timeout)
        check_timeout(self.trace_timeout, "--trace-timeout")
        if self.signal_budget < 1:
            raise EgcfgError("--signal-budget must be at least 1")
        if self.max_line_tokens < 1:
            raise EgcfgError("--max-line-tokens must be at least 1")
        if self.n_ctx < 1:
            raise EgcfgError("--n-ctx must be at least 1")
        return self

    def with_(self, **changes) -> "Config":
        return replace(self, **changes).validate()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gammas"] = list(self.gammas)
        return d


def as_recorded(agent: dict) -> dict:
    """An agent's settings as a run recorded them, with the settings added since filled in with
    what the run ran with: today's defaults, or LEGACY's value for a default that changed."""
    return {**Config().to_dict(), **LEGACY, **agent}


def check_timeout(seconds: float, flag: str = "--timeout") -> None:
    """A sandboxed run's time limit: > 0 and at most MAX_TIMEOUT (nan fails both)."""
    if not 0 < seconds <= MAX_TIMEOUT:
        raise EgcfgError(f"{flag} must be > 0 and at most {MAX_TIMEOUT:g} seconds")
