"""What an attempt and a solve produce: the result types, shared by the engine, the solver, the
benchmark runner and the reports (no logic here beyond their own bookkeeping)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Config


@dataclass
class Stats:
    executions: int = 0
    refreshes: int = 0
    guided_lines: int = 0
    tokens_decoded: int = 0
    tokens_prefilled: int = 0
    candidate_tokens: int = 0
    candidates_resampled: int = 0  # candidates drawn again because they repeated a program (--resample-duplicates)
    seconds_prefill: float = 0.0
    seconds_sampling: float = 0.0
    seconds_execution: float = 0.0
    seconds_guided: float = 0.0
    seconds_total: float = 0.0

    def add(self, other: "Stats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class LineRecord:
    """What --explain shows for one line: candidates, their traces (as the model saw them), the choice."""

    line: int
    candidates: list[str]
    signal: str | None
    chosen: str = ""
    guided: bool = False


@dataclass
class Attempt:
    gamma: float
    code: str
    passed: bool
    tests_passed: int
    tests_total: int
    stop_reason: str
    stats: Stats
    lines: list[LineRecord] = field(default_factory=list)
    test_results: list[dict] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # every token the attempt chose, in order
    agent: str = ""  # the agent whose schedule produced it (solve with several agents)


@dataclass
class SolveResult:
    task_id: str
    code: str
    passed: bool                 # on the visible tests
    gamma: float                 # the gamma of the attempt that produced `code`
    stats: Stats
    attempts: list[Attempt] = field(default_factory=list)
    config: Config | None = None
    model: str = ""
    agent: str = ""              # the agent of the attempt that produced `code` (several agents)

    @property
    def final(self) -> Attempt:
        return next(a for a in self.attempts if a.code == self.code and a.gamma == self.gamma
                    and a.agent == self.agent)

    def to_dict(self, explain: bool = False) -> dict:
        out = {
            "task_id": self.task_id,
            "code": self.code,
            "passed": self.passed,
            "gamma": self.gamma,
            "model": self.model,
            "stats": self.stats.to_dict(),
            "tests": self.final.test_results,
            "attempts": [
                {"agent": a.agent, "gamma": a.gamma, "passed": a.passed, "tests_passed": a.tests_passed, "tests_total": a.tests_total,
                 "stop_reason": a.stop_reason, "stats": a.stats.to_dict(), "code": a.code}
                for a in self.attempts
            ],
            "config": self.config.to_dict() if self.config else None,
        }
        if self.agent:
            out["agent"] = self.agent
        if explain:
            out["explain"] = [
                {"agent": a.agent, "gamma": a.gamma, "lines": [l.__dict__ for l in a.lines]} for a in self.attempts
            ]
        return out
