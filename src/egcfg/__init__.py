"""egcfg: execution-guided classifier-free guidance (EG-CFG) for code language models.

    >>> import egcfg
    >>> result = egcfg.solve({"task_id": "add", "prompt": "Add two numbers.", "entry_point": "add",
    ...                       "tests": ["assert add(1, 2) == 3"]})          # doctest: +SKIP
    >>> result.passed, result.code                                          # doctest: +SKIP
"""

from .config import Config
from .errors import EgcfgError
from .lm import load_model
from .solver import SolveResult, solve
from .task import IOTest, Task, load_tasks, task_from_dict

__version__ = "0.1.0"
__all__ = ["Config", "EgcfgError", "IOTest", "SolveResult", "Task", "load_model", "load_tasks", "solve", "task_from_dict",
           "__version__"]
