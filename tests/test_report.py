"""How reports state pass@1 when a run stopped part-way (no model)."""

from egcfg.bench.report import headline


def test_a_partial_run_says_so_with_the_bound_over_all_planned_tasks():
    done = {"finished": True, "pass_at_1": 55.0, "tasks": 100, "tasks_planned": 100, "pass_at_1_bound_over_planned": 55.0}
    assert headline(done) == "55.0%"
    partial = {"finished": False, "pass_at_1": 81.4, "tasks": 86, "tasks_planned": 100, "pass_at_1_bound_over_planned": 70.0}
    text = headline(partial)
    assert "81.4% of the 86 finished tasks" in text and "at least 70.0% of all 100 planned" in text
    assert "stopped part-way" in text


def test_a_run_names_its_model_by_file_and_sha256_not_by_path(tmp_path):
    import hashlib

    from egcfg.cli import model_identity
    from egcfg.models import MODELS

    spec = next(iter(MODELS.values()))
    assert model_identity("embedded")[1] in {m.sha256 for m in MODELS.values()}
    assert model_identity(next(iter(MODELS))) == (spec.filename, spec.sha256)
    weights = tmp_path / "deep" / "place" / "my-model.gguf"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not really weights")
    assert model_identity(str(weights)) == ("my-model.gguf", hashlib.sha256(b"not really weights").hexdigest())
    assert model_identity(str(tmp_path / "deep")) == ("deep", None)  # a transformers folder: no hash
