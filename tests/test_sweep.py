"""The sweep runner (ebmlib.book.sweep): a local Dask cluster of two workers, resumption, one-run mode, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from ebmlib.book import sweep as sw  # noqa: E402

SPEC = {
    "name": "tiny", "profile": "test", "dataset": "digits", "sizes": [64, 12, 10],
    "base": {"eps": 0.5, "free_steps": 8, "nudged_steps": 2, "beta": 1.0, "lrs": [0.1, 0.05], "batch_size": 40,
             "epochs": 2, "eval_steps": 30, "dtype": "float32"},
    "methods": {"bp_straight_through": {"method": "bp"}, "ep_fixed_sign": {"method": "ep", "random_sign": False}},
    "search": {"scales": [0.5, 2], "epochs": 1, "validation": 300, "seed": 0},
    "seeds": [0, 1],
}


def _records(d: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in (json.loads(p.read_text()) for p in sorted(d.glob("*.json")))}


@pytest.mark.slow
def test_local_cluster_runs_search_then_final_and_resumes(tmp_path):
    rec, work = tmp_path / "rec", tmp_path / "work"
    lines: list[str] = []
    ran = sw.run_sweep(SPEC, records_dir=rec, work_dir=work, workers=2, allow_dirty=True, poll_s=0.2,
                       log=lines.append)
    recs = _records(rec)
    # 2 methods x 2 scales (search) + 2 methods x 2 seeds (final), every one done, run by this call
    assert len(recs) == 8 and set(ran) == set(recs) and set(ran.values()) == {"done"}
    for m in SPEC["methods"]:
        search = [r for r in recs.values() if r["stage"] == "search" and r["method"] == m]
        final = [r for r in recs.values() if r["stage"] == "final" and r["method"] == m]
        chosen = sw.select_scale(search)
        assert {r["lr_scale"] for r in final} == {chosen} and {r["seed"] for r in final} == {0, 1}
        best = min(search, key=lambda r: r["history"]["test_error"][-1])["history"]["test_error"][-1]
        assert [r for r in search if r["lr_scale"] == chosen][0]["history"]["test_error"][-1] == best
    for r in recs.values():
        assert r["schema"] == sw.SCHEMA and len(r["commit"]) == 40
        n_ep = SPEC["search"]["epochs"] if r["stage"] == "search" else SPEC["base"]["epochs"]
        assert r["history"]["epoch"] == list(range(1, n_ep + 1))
        assert all(len(u) == 2 for u in r["history"]["update_ratio"])
        assert r["dataset"]["eval_split"] == ("validation" if r["stage"] == "search" else "test")
        assert r["dataset"]["n_test"] == (300 if r["stage"] == "search" else 449)
        assert r["config"]["lrs"] == [v * r["lr_scale"] for v in SPEC["base"]["lrs"]]
    assert not list(work.glob("*.pt"))  # checkpoints removed once the record is written
    assert any("search complete" in s for s in lines)

    # resumption: a finished job is not run again; a missing record is recomputed, identically on CPU
    victim = next(r for r in recs.values() if r["stage"] == "final")
    sw.record_path(rec, sw.Job.parse(victim["run_id"])).unlink()
    ran2 = sw.run_sweep(SPEC, records_dir=rec, work_dir=work, workers=2, allow_dirty=True, poll_s=0.2,
                        log=lambda s: None)
    assert list(ran2) == [victim["run_id"]]
    again = _records(rec)[victim["run_id"]]
    assert again["history"]["test_error"] == victim["history"]["test_error"]
    assert again["history"]["train_cost"] == victim["history"]["train_cost"]


def test_one_run_in_process_resumes_from_its_checkpoint(tmp_path):
    """``--only`` writes the same record; a job interrupted after epoch 1 resumes from its checkpoint."""
    import ebmlib as eb

    job = sw.Job("final", "bp_straight_through", 0.5, 1)
    spec = dict(SPEC, base=dict(SPEC["base"], epochs=1))
    first = sw.run_job(spec, job, str(tmp_path / "a"), str(tmp_path / "wa"), allow_dirty=True)
    # an interrupted 2-epoch run: its checkpoint holds epoch 1, the job finishes epoch 2 from there
    cfg = sw.job_config(SPEC, job, checkpoint=str(tmp_path / "wb" / "final__bp_straight_through__x0.5__s1.pt"))
    cfg.epochs = 1
    (tmp_path / "wb").mkdir()
    eb.train(cfg, sw._dataset("digits", "", 0, 0, 0), progress=False)
    resumed = sw.run_job(SPEC, job, str(tmp_path / "b"), str(tmp_path / "wb"), allow_dirty=True)
    whole = sw.run_job(SPEC, job, str(tmp_path / "c"), str(tmp_path / "wc"), allow_dirty=True)
    assert resumed["history"]["test_error"] == whole["history"]["test_error"]
    assert resumed["history"]["test_error"][0] == first["history"]["test_error"][0]
    assert json.loads(sw.record_path(tmp_path / "c", job).read_text())["run_id"] == job.run_id


def test_expected_config_and_spec_errors(tmp_path):
    spec = sw.load_sweep("fmnist-784-500-10", "paper")
    rec = {"sweep": "fmnist-784-500-10", "profile": "paper", "stage": "search", "method": "ep_fixed_sign",
           "lr_scale": 2.0, "seed": 0}
    cfg = sw.expected_config(rec)
    assert cfg["lrs"] == [0.2, 0.1] and cfg["epochs"] == spec["search"]["epochs"] and cfg["random_sign"] is False
    assert "checkpoint" not in cfg and "device" not in cfg
    assert sw.expected_config(dict(rec, stage="final"))["epochs"] == spec["base"]["epochs"]
    with pytest.raises(ValueError, match="name: no sweep"):
        sw.load_sweep("nope", "paper")
    with pytest.raises(ValueError, match="run_id"):
        sw.Job.parse("final/ep/1/s0")
    with pytest.raises(ValueError, match="methods: 'nope'"):
        sw.check_methods(SPEC, ["nope"])
    with pytest.raises(ValueError, match="search.validation"):
        sw._dataset("digits", "", 0, 0, 5000)
    assert sw.Job.parse("final/ep_symmetric/x0.25/s2") == sw.Job("final", "ep_symmetric", 0.25, 2)
    assert sw.main(["fmnist-784-500-10", "--methods", "nope"]) == 2


def test_select_scale_prefers_lowest_error_then_the_paper_rates():
    def rec(scale, err, status="done"):
        return {"lr_scale": scale, "status": status, "history": {"test_error": [0.9, err]}}

    assert sw.select_scale([rec(0.5, 0.2), rec(1.0, 0.1), rec(2.0, 0.15)]) == 1.0
    assert sw.select_scale([rec(0.5, 0.1), rec(1.0, 0.1), rec(4.0, 0.1)]) == 1.0
    assert sw.select_scale([rec(0.5, 0.3), rec(4.0, 0.01, "diverged")]) == 0.5
    assert sw.select_scale([]) is None
