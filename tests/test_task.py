import json

import pytest

from egcfg.errors import EgcfgError
from egcfg.task import load_tasks, task_from_dict


def write(tmp_path, obj):
    path = tmp_path / "task.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


GOOD = {"task_id": "t", "prompt": "Add.", "entry_point": "add", "tests": ["assert add(1, 2) == 3"]}


def test_loads_one_task_and_a_list(tmp_path):
    assert load_tasks(write(tmp_path, GOOD))[0].entry_point == "add"
    tasks = load_tasks(write(tmp_path, [GOOD, dict(GOOD, task_id="u")]))
    assert [t.task_id for t in tasks] == ["t", "u"]


def test_io_task(tmp_path):
    task = load_tasks(write(tmp_path, {"task_id": "io", "prompt": "Echo.", "io_tests": [{"input": "1\n", "output": "1\n"}]}))[0]
    assert task.is_io and task.io_tests[0].input == "1\n"


@pytest.mark.parametrize("broken, words", [
    ({"prompt": "x", "entry_point": "f", "tests": ["assert f()"]}, "missing field 'task_id'"),
    (dict(GOOD, tests=[]), "visible tests"),
    (dict(GOOD, tests="assert add(1,2) ==="), "not valid Python"),
    (dict(GOOD, entry_point="not a name"), "entry_point"),
    (dict(GOOD, tests=[1, 2]), "list of strings"),
    ({"task_id": "io", "prompt": "x", "io_tests": [{"input": 1}]}, "io_tests"),
    ([], "empty"),
])
def test_malformed_files_name_the_field(tmp_path, broken, words):
    with pytest.raises(EgcfgError) as err:
        load_tasks(write(tmp_path, broken))
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(EgcfgError, match="not valid JSON"):
        load_tasks(write(tmp_path, "{oops"))
    with pytest.raises(EgcfgError, match="no such file"):
        load_tasks(tmp_path / "absent.json")


def test_example_tasks_load():
    from conftest import EXAMPLES

    for path in EXAMPLES.glob("*.json"):
        assert load_tasks(path)


def test_task_from_dict_rejects_non_object():
    with pytest.raises(EgcfgError, match="expected a JSON object"):
        task_from_dict(["x"])
