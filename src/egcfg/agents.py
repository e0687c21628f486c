"""Hyperparameter agents: the paper's grid, or a grid from a JSON file.

The paper's grid is t in {0.7, 0.75, 0.85, 0.95, 1.2, 1.5} x d in {2, 3, 6, 8} x prompt in
{instruct, long-code}, s = 3, each agent trying gamma in [0, 0.5, 1, 3] in order. ``paper_grid(n)``
returns the first n agents in an order that varies every axis early, so small n still explore.
A grid file is a JSON list of objects with Config field names, e.g.
``[{"temperature": 0.7, "horizon": 3, "prompt_style": "instruct"}, ...]`` (missing fields: defaults).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import MutableMapping

from .config import Config
from .errors import EgcfgError
from .prompts import STYLES

TEMPERATURES = (0.7, 0.75, 0.85, 0.95, 1.2, 1.5)
GRID_FIELDS = ("temperature", "horizon", "prompt_style", "candidates")  # what paper_grid sets per agent
HORIZONS = (2, 3, 6, 8)


@dataclass(frozen=True)
class Agent:
    name: str
    config: Config


class FirstPass:
    """The multi-agent policy: agents of a task run in order (or at once, in a benchmark's worker
    processes); the first attempt that passes solves the task, and every other agent's schedule
    stops at its next line boundary (their ``cancelled`` hook polls ``solved``). The final program
    is then the first passing attempt in agent order, then gamma order (``solver.pick_final``).

    ``flags`` is where "solved" is kept: this object alone by default, or a mapping shared by
    processes (a multiprocessing manager's dict) under ``key``."""

    def __init__(self, flags: MutableMapping | None = None, key: str = "solved"):
        self._flags = {} if flags is None else flags
        self._key = key

    def solved(self) -> bool:
        return self._key in self._flags

    def mark(self) -> None:
        self._flags[self._key] = True

    def record(self, attempt) -> bool:
        """``run_schedule``'s record hook for a visible-test verdict: a pass marks the task solved."""
        if attempt.passed:
            self.mark()
        return attempt.passed


def _name(cfg: Config) -> str:
    return f"t{cfg.temperature:g}-d{cfg.horizon}-s{cfg.candidates}-{cfg.prompt_style}"


def paper_grid(n: int | None = None, base: Config | None = None) -> list[Agent]:
    base = base or Config()
    product = list(itertools.product(TEMPERATURES, HORIZONS, STYLES))
    # Walk the 48 combinations with a stride coprime to 48, so that consecutive agents differ in
    # temperature, horizon and prompt style at once and every prefix of the list explores.
    combos = [product[(i * 29) % len(product)] for i in range(len(product))]
    agents = [Agent(_name(cfg), cfg) for cfg in
              (base.with_(temperature=t, horizon=d, prompt_style=p, candidates=3) for t, d, p in combos)]
    return agents if n is None else agents[:n]


def load_grid(path: str | Path, base: Config | None = None) -> list[Agent]:
    base = base or Config()
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EgcfgError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise EgcfgError(f"{path}: not a JSON agent grid ({exc})") from None
    if not isinstance(items, list) or not items:
        raise EgcfgError(f"{path}: an agent grid is a non-empty JSON list of objects")
    known = {f.name for f in fields(Config)}
    agents = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise EgcfgError(f"{path}[{i}]: expected an object of Config fields")
        unknown = set(item) - known - {"name"}
        if unknown:
            raise EgcfgError(f"{path}[{i}]: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        values = {k: v for k, v in item.items() if k != "name"}
        try:
            if "gammas" in values:
                gammas = values["gammas"]
                if not isinstance(gammas, list) or any(isinstance(g, (bool, str)) for g in gammas):
                    raise EgcfgError(f"gammas must be a list of numbers, not {gammas!r}")
                values["gammas"] = tuple(float(g) for g in gammas)
            cfg = base.with_(**values)
        except (TypeError, ValueError, EgcfgError) as exc:
            raise EgcfgError(f"{path}[{i}]: {exc}") from None
        agents.append(Agent(str(item.get("name") or _name(cfg)), cfg))
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise EgcfgError(f"{path}: agent names must be unique")
    return agents


def baseline_agent(base: Config | None = None) -> Agent:
    """Plain greedy decoding with the same prompt: the method's baseline."""
    cfg = (base or Config()).with_(gammas=(0.0,))
    return Agent(f"greedy-{cfg.prompt_style}", cfg)
