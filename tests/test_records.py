"""The recorded paper-scale learning runs (``ebmlib.book.records``): the schema catches each kind of bad
record, the search and the summary give hand-computed numbers on synthetic records, the verdicts follow
the numbers, the figures build, and the REAL records in ``chapters/_measured/learning`` are consistent with
the repository (skipped while there are none)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import matplotlib
import pytest
from conftest import ROOT

import ebmlib.book.records as R

matplotlib.use("Agg")

SWEEP = "fmnist-784-500-10"
CONTRACT = ROOT / "tests" / "data" / "records" / SWEEP / "final__ep_random_sign__x1__s0.json"
T95_2 = 4.3027  # Student's t, two-sided 95 %, 2 degrees of freedom (table value)


def make(stage="final", method="ep_random_sign", seed=0, scale=1.0, test=(0.2, 0.15), train=(0.25, 0.18),
         status="done", sweep=SWEEP, sizes=(784, 500, 10), epochs=None, wall=100.0, ratios=None) -> dict:
    """A valid record (errors must be counts over 60,000 training and 10,000 evaluation examples)."""
    n_ep = len(test)
    n_layers = len(sizes) - 1
    return {
        "schema": R.SCHEMA, "sweep": sweep, "profile": "paper", "run_id": f"{stage}/{method}/x{scale:g}/s{seed}",
        "stage": stage, "method": method, "seed": seed, "lr_scale": scale, "paper_rates": scale == 1.0,
        "config": {"sizes": list(sizes), "method": "ep", "lrs": [0.1 * scale] * n_layers,
                   "epochs": epochs if epochs is not None else n_ep, "seed": seed},
        "dataset": {"name": "fashion-mnist", "n_train": 60000, "n_test": 10000,
                    "eval_split": "test" if stage == "final" else "validation"},
        "history": {"epoch": list(range(1, n_ep + 1)), "train_error": list(train), "test_error": list(test),
                    "train_cost": [0.3] * n_ep, "wall_s": [10.0] * n_ep,
                    "update_ratio": ratios if ratios is not None else [[0.1 / (e + 1), 0.3 / (e + 1)][:n_layers]
                                                                       + [0.2] * (n_layers - 2) for e in range(n_ep)]},
        "status": status, "error": None if status == "done" else "non-finite weights",
        "commit": "a" * 40, "dirty": False,
        "device": {"kind": "cpu", "name": "test cpu", "threads": 1, "torch": "2.13.0", "platform": "linux"},
        "started": "2026-12-01T10:00:00+00:00", "finished": "2026-12-01T10:05:00+00:00", "wall_s": wall,
    }


# ---------------------------------------------------------------------------- the schema
def test_a_valid_record_and_the_contract_file_pass():
    rec = make()
    assert R.validate_record(rec) is rec
    contract = json.loads(CONTRACT.read_text())
    assert R.validate_record(contract)["run_id"] == "final/ep_random_sign/x1/s0"
    R.validate_record(make(status="diverged", test=(0.2,), train=(0.25,), epochs=25))
    R.validate_record(make(status="diverged", test=(), train=(), epochs=25))  # nothing finished
    R.validate_record(make(stage="search", scale=0.25))


def _set(path, value):
    def f(r):
        *head, last = path
        d = r
        for k in head:
            d = d[k]
        d[last] = value
    return f


def _del(path):
    def f(r):
        *head, last = path
        d = r
        for k in head:
            d = d[k]
        del d[last]
    return f


BAD = {
    "missing key": (_del(["commit"]), "record.commit: missing"),
    "unknown key": (_set(["extra"], 1), "record.extra: unknown key"),
    "schema": (_set(["schema"], "ebmlib.learning-run/0"), "record.schema"),
    "seed as text": (_set(["seed"], "0"), "record.seed"),
    "seed as bool": (_set(["seed"], False), "record.seed"),
    "zero scale": (_set(["lr_scale"], 0.0), "record.lr_scale"),
    "paper_rates contradicts lr_scale": (_set(["paper_rates"], False), "record.paper_rates"),
    "run_id names another method": (_set(["run_id"], "final/ep_symmetric/x1/s0"), "record.run_id"),
    "run_id names another scale": (_set(["run_id"], "final/ep_random_sign/x2/s0"), "record.run_id"),
    "run_id malformed": (_set(["run_id"], "final/ep_random_sign/s0"), "record.run_id"),
    "unknown stage": (_set(["stage"], "test"), "record.stage"),
    "unknown status": (_set(["status"], "killed"), "record.status"),
    "short commit": (_set(["commit"], "4933817"), "record.commit"),
    "uppercase commit": (_set(["commit"], "A" * 40), "record.commit"),
    "commit unknown": (_set(["commit"], "unknown"), "record.commit"),
    "dirty not bool": (_set(["dirty"], "no"), "record.dirty"),
    "history list too short": (_set(["history", "test_error"], [0.2]), "record.history.test_error"),
    "update_ratio too long": (_set(["history", "update_ratio"], [[0.1, 0.1]] * 3), "record.history.update_ratio"),
    "epochs not 1..E": (_set(["history", "epoch"], [0, 1]), "record.history.epoch"),
    "history not a list": (_set(["history", "wall_s"], 3.0), "record.history.wall_s"),
    "history unknown key": (_set(["history", "val_error"], [0.1, 0.1]), "record.history.val_error"),
    "error above 1": (_set(["history", "test_error"], [0.2, 1.5]), "record.history.test_error[1]"),
    "error in percent": (_set(["history", "train_error"], [25.0, 18.0]), "record.history.train_error[0]"),
    "negative error": (_set(["history", "test_error"], [-0.1, 0.1]), "record.history.test_error[0]"),
    "error not a count": (_set(["history", "test_error"], [0.2, 0.123456789]), "record.history.test_error[1]"),
    "nan cost": (_set(["history", "train_cost"], [0.3, float("nan")]), "record.history.train_cost[1]"),
    "negative epoch time": (_set(["history", "wall_s"], [10.0, -1.0]), "record.history.wall_s[1]"),
    "one ratio per layer": (_set(["history", "update_ratio"], [[0.1], [0.1]]), "record.history.update_ratio[0]"),
    "negative ratio": (_set(["history", "update_ratio"], [[0.1, -0.1], [0.1, 0.1]]), "record.history.update_ratio[0]"),
    "done but short": (_set(["config", "epochs"], 3), "record.history"),
    "done with an error": (_set(["error"], "boom"), "record.error"),
    "config not an object": (_set(["config"], [1]), "record.config"),
    "config records device": (_set(["config", "device"], "cpu"), "record.config.device"),
    "config records checkpoint": (_set(["config", "checkpoint"], None), "record.config.checkpoint"),
    "config lacks sizes": (_del(["config", "sizes"]), "record.config.sizes"),
    "config rates per layer": (_set(["config", "lrs"], [0.1]), "record.config.lrs"),
    "config seed differs": (_set(["config", "seed"], 3), "record.config.seed"),
    "config zero epochs": (_set(["config", "epochs"], 0), "record.config.epochs"),
    "eval split of a final run": (_set(["dataset", "eval_split"], "validation"), "record.dataset.eval_split"),
    "dataset size zero": (_set(["dataset", "n_test"], 0), "record.dataset.n_test"),
    "device lacks threads": (_del(["device", "threads"]), "record.device.threads"),
    "device name empty": (_set(["device", "name"], ""), "record.device.name"),
    "finished before started": (_set(["finished"], "2026-12-01T09:00:00+00:00"), "record.finished"),
    "time without offset": (_set(["started"], "2026-12-01T10:00:00"), "record.started"),
    "time not iso": (_set(["finished"], "yesterday"), "record.finished"),
    "negative wall time": (_set(["wall_s"], -1.0), "record.wall_s"),
    "sweep not a folder name": (_set(["sweep"], "a/b"), "record.sweep"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_each_kind_of_bad_record_is_caught_and_named(name):
    spoil, field = BAD[name]
    rec = make()
    spoil(rec)
    with pytest.raises(ValueError) as info:
        R.validate_record(rec)
    assert str(info.value).startswith(field), f"{name}: {info.value}"


def test_diverged_runs_need_a_message_and_fewer_epochs():
    no_message = make(status="diverged", test=(0.2,), train=(0.25,), epochs=25)
    no_message["error"] = None
    with pytest.raises(ValueError, match=r"^record\.error"):
        R.validate_record(no_message)
    with pytest.raises(ValueError, match=r"^record\.history: a diverged run"):
        R.validate_record(make(status="diverged"))
    with pytest.raises(ValueError, match=r"^record:"):
        R.validate_record([make()])


# ---------------------------------------------------------------------------- the folder
def write(folder: Path, rec: dict, name: str | None = None) -> Path:
    d = folder / rec["sweep"]
    d.mkdir(parents=True, exist_ok=True)
    p = d / (name or R.record_file_name(rec["run_id"]))
    p.write_text(json.dumps(rec))
    return p


def test_load_records_reads_validates_and_orders(tmp_path):
    assert R.load_records(tmp_path / "absent") == []
    recs = [make(method="ep_symmetric", seed=1), make(method="bptt"), make(stage="search", scale=2.0),
            make(method="ep_symmetric", seed=0), make(sweep="other", method="bptt")]
    for r in recs:
        write(tmp_path, r)
    (tmp_path / SWEEP / "NOT_RUN.json").write_text(json.dumps({"reason": "x"}))
    got = R.load_records(tmp_path)
    assert [(r["sweep"], r["stage"], r["method"], r["seed"]) for r in got] == [
        (SWEEP, "search", "ep_random_sign", 0), (SWEEP, "final", "bptt", 0), (SWEEP, "final", "ep_symmetric", 0),
        (SWEEP, "final", "ep_symmetric", 1), ("other", "final", "bptt", 0)]
    assert len(R.load_records(tmp_path, sweep="other")) == 1
    with pytest.raises(ValueError, match="sweep"):
        R.load_records(tmp_path, sweep="../x")


def test_load_records_names_the_file_and_the_field(tmp_path):
    bad = make()
    bad["history"]["test_error"] = [0.2, 2.0]
    p = write(tmp_path, bad)
    with pytest.raises(ValueError, match=r"final__ep_random_sign__x1__s0\.json: record\.history\.test_error\[1\]"):
        R.load_records(tmp_path)
    p.unlink()
    write(tmp_path, make(), name="renamed.json")
    with pytest.raises(ValueError, match="belongs in final__ep_random_sign__x1__s0.json"):
        R.load_records(tmp_path)
    (tmp_path / SWEEP / "renamed.json").unlink()
    write(tmp_path / "elsewhere", make())
    (tmp_path / "elsewhere" / SWEEP).rename(tmp_path / "wrong-folder")
    with pytest.raises(ValueError, match="folder 'wrong-folder'"):
        R.load_records(tmp_path)


def test_sweep_status_reasons(tmp_path):
    book = tmp_path / "book"
    (book / "params").mkdir(parents=True)
    spec = {"sizes": [784, 500, 10], "methods": {"a": {}, "b": {}}, "search": {"scales": [0.5, 1, 2]},
            "seeds": [0, 1, 2]}
    deep = dict(spec, sizes=[784, 500, 500, 10])
    (book / "params" / "paper.yaml").write_text(json.dumps({"sweeps": {SWEEP: spec, "fmnist-784-500-500-10": deep,
                                                                       "mnist-784-500-10": spec}}))
    records = tmp_path / "records"
    (records / "fmnist-784-500-500-10").mkdir(parents=True)
    (records / "fmnist-784-500-500-10" / "NOT_RUN.json").write_text(json.dumps(
        {"reason": "60 epochs at 90 s each do not fit", "epoch_seconds_measured": 90.0, "device": "cpu x"}))
    st = {s["sweep"]: s for s in R.sweep_status([make(), make(seed=1)], records_root=records, book_root=book)}
    assert st[SWEEP]["state"] == "partial" and st[SWEEP]["final_runs"] == 2 and st[SWEEP]["expected_runs"] == 12
    assert st["fmnist-784-500-500-10"]["state"] == "not run"
    assert st["fmnist-784-500-500-10"]["reason"].startswith("60 epochs")
    assert st["fmnist-784-500-500-10"]["epoch_seconds_measured"] == 90.0
    assert "MNIST is not available offline" in st["mnist-784-500-10"]["reason"]
    md = R.status_markdown(list(st.values()))
    assert "one epoch measured at 90 s on cpu x" in md and "784\u2011500\u2011500\u201110" in md


# ---------------------------------------------------------------------------- search and summary
def search_records() -> list[dict]:
    return [
        make(stage="search", method="ep_random_sign", scale=0.5, test=(0.4, 0.3)),
        make(stage="search", method="ep_random_sign", scale=1.0, test=(0.3, 0.2)),
        make(stage="search", method="ep_random_sign", scale=2.0, test=(0.3,), train=(0.3,), status="diverged",
             epochs=2),
        make(stage="search", method="bptt", scale=0.5, test=(0.3, 0.25)),
        make(stage="search", method="bptt", scale=2.0, test=(0.3, 0.25)),
        make(stage="search", method="bptt", scale=4.0, test=(0.3, 0.26)),
        make(stage="search", method="bp_sigmoid", scale=0.25, test=(0.3, 0.27)),
        make(stage="search", method="bp_sigmoid", scale=2.0, test=(0.3, 0.27)),
    ]


def test_select_scales_hand_computed():
    sel = R.select_scales(search_records() + [make()])
    assert list(sel) == [(SWEEP, "bp_sigmoid"), (SWEEP, "bptt"), (SWEEP, "ep_random_sign")]
    assert sel[(SWEEP, "bp_sigmoid")]["lr_scale"] == 2.0  # a tie: x2 is nearer the paper's rates than x0.25
    ep = sel[(SWEEP, "ep_random_sign")]
    assert ep["lr_scale"] == 1.0 and ep["paper_chosen"] and ep["paper_candidate"] and not ep["on_edge"]
    assert [c["val_error"] for c in ep["candidates"]] == [0.3, 0.2, 1.0]  # the diverged run counts as 1
    assert ep["budget"] == {"candidates": 3, "runs": 3, "epochs_per_run": [2], "epochs": 6}
    bp = sel[(SWEEP, "bptt")]
    assert bp["lr_scale"] == 0.5  # a tie at 0.25 between x0.5 and x2: both a factor 2 from 1, the smaller wins
    assert bp["on_edge"] and not bp["paper_candidate"] and bp["lrs"] == [0.05, 0.05]
    two_seeds = [make(stage="search", scale=1.0, test=(0.3, 0.2)), make(stage="search", scale=1.0, seed=1,
                 test=(0.3, 0.3)), make(stage="search", scale=2.0, test=(0.3, 0.24))]
    s = R.select_scales(two_seeds)[(SWEEP, "ep_random_sign")]
    assert s["candidates"][0]["val_error"] == pytest.approx(0.25) and s["lr_scale"] == 2.0


def test_select_scales_agrees_with_the_sweep_runner():
    sweep = pytest.importorskip("ebmlib.book.sweep")
    if not hasattr(sweep, "select_scale"):
        pytest.skip("ebmlib.book.sweep has no select_scale yet")
    recs = search_records()
    for (_, method), s in R.select_scales(recs).items():
        assert s["lr_scale"] == sweep.select_scale([r for r in recs if r["method"] == method])


def final_records() -> list[dict]:
    return [
        make(method="ep_random_sign", seed=0, test=(0.2, 0.12), train=(0.3, 0.10), wall=100.0),
        make(method="ep_random_sign", seed=1, test=(0.2, 0.13), train=(0.3, 0.11), wall=110.0),
        make(method="ep_random_sign", seed=2, test=(0.2, 0.14), train=(0.3, 0.12), wall=120.0),
        make(method="ep_random_sign", seed=3, test=(0.2,), train=(0.3,), status="diverged", epochs=2),
        make(method="bptt", seed=0, test=(0.2, 0.11), train=(0.3, 0.09)),
        make(method="bptt", seed=1, test=(0.2, 0.13), train=(0.3, 0.10)),
        make(method="bptt", seed=2, test=(0.2, 0.12), train=(0.3, 0.11)),
        make(method="ep_symmetric", seed=0, test=(0.2, 0.15), train=(0.3, 0.12)),
    ]


def test_summarize_hand_computed():
    rows = {r["method"]: r for r in R.summarize(final_records() + search_records())}
    assert list(rows) == ["bptt", "ep_random_sign", "ep_symmetric"]
    ep = rows["ep_random_sign"]
    assert (ep["n"], ep["n_diverged"], ep["seeds"]) == (3, 1, [0, 1, 2])
    assert ep["test_mean"] == pytest.approx(0.13, abs=1e-15) and ep["test_std"] == pytest.approx(0.01, abs=1e-15)
    assert ep["test_interval"]["half"] == pytest.approx(T95_2 * 0.01 / math.sqrt(3), rel=1e-4)
    assert ep["train_mean"] == pytest.approx(0.11) and ep["train_std"] == pytest.approx(0.01)
    assert ep["wall_s"] == pytest.approx(110.0) and ep["train_wall_s"] == pytest.approx(20.0)
    assert ep["epochs"] == [2] and ep["lr_scales"] == [1.0] and ep["paper_rates"] and ep["lrs"] == [(0.1, 0.1)]
    assert ep["architecture"] == "784-500-10" and ep["dataset"] == "fashion-mnist"
    one = rows["ep_symmetric"]
    assert one["n"] == 1 and one["test_std"] is None and one["test_interval"] is None and one["test_mean"] == 0.15
    md = R.final_table_markdown(list(rows.values()), R.select_scales(search_records()))
    assert "| ep_random_sign | 3 (+1 diverged) | 13.00 ± 1.00 | 2.48 | 11.00 ± 1.00 |" in md
    assert "3 scales × 2 epochs" in md and "no search" in md and "(1 thread)" in md


def test_paired_gap_hand_computed():
    g = R.paired_gap(final_records(), SWEEP, "ep_random_sign", "bptt")
    assert g["seeds"] == [0, 1, 2] and g["diffs"] == pytest.approx([0.01, 0.0, 0.02])
    assert g["mean"] == pytest.approx(0.01) and g["half"] == pytest.approx(T95_2 * 0.01 / math.sqrt(3), rel=1e-4)
    one = R.paired_gap(final_records(), SWEEP, "ep_symmetric", "bptt")
    assert one["n"] == 1 and one["mean"] == pytest.approx(0.04) and one["half"] is None
    assert R.paired_gap(final_records(), SWEEP, "ep_symmetric", "continual_ep") is None
    with pytest.raises(ValueError, match="^b:"):
        R.paired_gap(final_records(), SWEEP, "bptt", "")


# ---------------------------------------------------------------------------- verdicts
def test_level_verdict():
    assert R.level_verdict(0.025, None, 0.02, 0.03) == {"word": "agrees", "by": 0.0}
    assert R.level_verdict(0.035, 0.006, 0.02, 0.03)["word"] == "agrees"  # the interval reaches the range
    v = R.level_verdict(0.12, 0.01, 0.02, 0.03)
    assert v["word"] == "differs" and v["by"] == pytest.approx(0.09)
    assert R.level_verdict(0.01, None, 0.02, 0.03)["by"] == pytest.approx(-0.01)
    with pytest.raises(ValueError, match="^lo, hi"):
        R.level_verdict(0.1, None, 0.3, 0.2)
    with pytest.raises(ValueError, match="^half"):
        R.level_verdict(0.1, -1.0, 0.0, 0.2)


def _gap(mean, half):
    return {"mean": mean, "half": half, "lo": None if half is None else mean - half,
            "hi": None if half is None else mean + half}


@pytest.mark.parametrize("gap, expect, size, word, sign", [
    (_gap(0.003, 0.01), "zero", None, "agrees", 0),
    (_gap(0.03, 0.01), "zero", None, "differs", 1),
    (_gap(-0.03, 0.01), "zero", None, "differs", -1),
    (_gap(0.03, 0.01), "positive", 0.743, "agrees in sign", 1),
    (_gap(0.70, 0.05), "positive", 0.743, "agrees", 1),
    (_gap(0.03, 0.01), "positive", None, "agrees", 1),
    (_gap(0.003, 0.01), "positive", 0.743, "differs", 0),
    (_gap(-0.03, 0.01), "positive", 0.743, "differs", -1),
    (_gap(-0.03, 0.01), "positive", None, "differs", -1),
    (_gap(0.003, 0.01), "positive", None, "not resolved", 0),
    (_gap(0.003, 0.01), "positive", 0.005, "not resolved", 0),
    (_gap(0.03, None), "zero", None, "not resolved", None),
    (_gap(0.03, 0.01), None, None, "not compared", 1),
    (None, "zero", None, "no data", None),
])
def test_gap_verdict(gap, expect, size, word, sign):
    assert R.gap_verdict(gap, expect, size) == {"word": word, "sign": sign}


def test_gap_verdict_checks_arguments():
    with pytest.raises(ValueError, match="^expect"):
        R.gap_verdict(_gap(0.0, 0.1), "negative")
    with pytest.raises(ValueError, match="^size"):
        R.gap_verdict(_gap(0.0, 0.1), "positive", float("nan"))


def test_compare_published_on_fixtures():
    recs = final_records() + [make(method="ep_fixed_sign", seed=s, test=(0.2, e), train=(0.3, 0.1))
                              for s, e in ((0, 0.16), (1, 0.17), (2, 0.19))]
    recs += [make(method="ep_symmetric", seed=s, test=(0.2, e), train=(0.3, 0.1)) for s, e in ((1, 0.13), (2, 0.14))]
    status = [{"sweep": "deep", "architecture": "784-500-500-10", "state": "not run", "reason": "too slow here"},
              {"sweep": "partial", "architecture": "784-500-500-500-10", "state": "partial", "reason": None}]
    rows = {r["key"]: r for r in R.compare_published(recs, status)}
    sb = rows["sb2017:784-500-10"]
    assert sb["word"] == "differs" and "different data set (fashion-mnist" in sb["verdict"]
    assert "test differs (+10.00 pp from 2–3 %)" in sb["verdict"] and "train differs (+11.00 pp from 0.00 %)" in sb["verdict"]
    assert rows["sb2017:784-500-500-10"]["ours"] == "deep: too slow here"
    assert rows["sb2017:784-500-500-500-10"]["ours"] == "partial: no final ep_random_sign run recorded yet"
    assert R.compare_published(recs)[2]["ours"] == "no records yet"
    # ep_random_sign - bptt = (0.01, 0, 0.02): interval 0.01 ± 0.025 straddles 0
    assert rows["ernoult2019"]["word"] == "agrees"
    # ep_fixed_sign - ep_symmetric = (0.01, 0.04, 0.05): 0.0333 ± 0.0517 straddles 0, published +74.3 pp
    assert rows["laborieux2021_sign"]["word"] == "differs"
    assert "no cost of the fixed sign is resolved" in rows["laborieux2021_sign"]["verdict"]
    assert rows["laborieux2021_asym"]["word"] == "not compared"
    assert rows["ernoult2020"]["word"] == "no data"
    md = R.published_table_markdown(list(rows.values()))
    assert md.count("\n") == len(rows) + 1


def test_published_numbers_are_sourced_and_unchecked_ones_say_so():
    for key, p in R.PUBLISHED.items():
        assert p["checked"] and p["source"] and p["cite"], key
    assert R.PUBLISHED["sb2017"]["test"] == (0.02, 0.03)
    assert R.PUBLISHED["laborieux2021_sign"]["size"] == pytest.approx(0.743)
    for key in ("ernoult2020", "laborieux2021_random", "scellier2023"):
        assert "not checked (source not available offline)" in R.PUBLISHED[key]["text"], key
    bib = (ROOT / "chapters" / "references.bib").read_text()
    for p in R.PUBLISHED.values():
        assert "{" + p["cite"] + "," in bib, p["cite"]


# ---------------------------------------------------------------------------- figures
def test_figures_build_from_fixtures():
    import matplotlib.pyplot as plt

    recs = final_records()
    curves = R.learning_curves(recs, SWEEP)
    assert list(curves) == ["bptt", "ep_random_sign", "ep_symmetric"]
    assert curves["ep_random_sign"]["test_mean"] == pytest.approx([0.2, 0.13])
    assert curves["ep_random_sign"]["test_half"][1] == pytest.approx(T95_2 * 0.01 / math.sqrt(3), rel=1e-4)
    assert curves["ep_symmetric"]["test_half"] is None
    fig = R.learning_curves_figure(recs, SWEEP)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ep_random_sign: 13.00 ± 2.48 % test, 11.00 % train (n = 3)" in labels
    assert ax.get_yscale() == "log" and all(float(t).is_integer() for t in ax.get_xticks())
    styles = {(ln.get_color(), ln.get_marker()) for ln in ax.get_lines() if ln.get_linestyle() == "-"}
    assert len(styles) == 3, "each method its own colour and marker"
    plt.close(fig)
    eff = R.effective_lr(recs, SWEEP)
    assert eff["ep_random_sign"]["ratio"][0] == pytest.approx([0.1, 0.05])  # geometric mean of equal seeds
    fig = R.effective_lr_figure(recs, SWEEP)
    assert len(fig.axes) == 2 and all(a.get_yscale() == "log" for a in fig.axes)
    plt.close(fig)
    for f in (R.learning_curves_figure([], SWEEP), R.effective_lr_figure([], SWEEP)):
        assert "no final run" in f.axes[0].texts[0].get_text()
        plt.close(f)


def test_effective_lr_geometric_mean():
    recs = [make(seed=0, ratios=[[0.1, 0.4], [0.01, 0.04]]), make(seed=1, ratios=[[0.4, 0.1], [0.04, 0.01]])]
    eff = R.effective_lr(recs, SWEEP)["ep_random_sign"]
    for k in range(2):  # layer k: seeds (0.1, 0.4) then (0.01, 0.04): geometric means 0.2 and 0.02
        assert eff["ratio"][k] == pytest.approx([0.2, 0.02], rel=1e-12)


def test_search_table_marks_choice_and_paper_rates():
    md = R.search_table_markdown(R.select_scales(search_records()))
    assert "×1 (paper)" in md and "**20.00**" in md and "**25.00**" in md and "100.00 (diverged)" in md
    assert "(edge of the grid)" in md and "3 runs, 6 epochs" in md
    assert R.search_table_markdown({}) == "No search run is recorded yet."
    status = [{"sweep": SWEEP, "scales": [0.25, 0.5, 1.0, 2.0, 4.0]}]
    md = R.search_table_markdown(R.select_scales(search_records()), status)
    assert "| ×0.25 | ×0.5 | ×1 (paper) | ×2 | ×4 |" in md
    assert "(search incomplete: 3 of 5 scales)" in md and "×0.5 (0.05, 0.05) (edge of the grid) (search incomplete: 3 of 5" in md


# ---------------------------------------------------------------------------- the REAL records
REAL = ROOT / R.LEARNING_DIR


@pytest.fixture(scope="module")
def real() -> list[dict]:
    recs = R.load_records(REAL)  # validates every file: a bad one fails here
    if not recs:
        pytest.skip(f"no recorded run under {R.LEARNING_DIR}")
    return recs


def test_real_records_name_commits_of_this_repository(real):
    if not (ROOT / ".git").exists():
        pytest.skip("no .git in this checkout")
    for sha in sorted({r["commit"] for r in real}):
        ok = subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=ROOT, capture_output=True).returncode
        assert ok == 0, f"commit {sha} named by a record is not in this repository"


def test_real_records_come_from_clean_trees(real):
    dirty = [r["run_id"] for r in real if r["dirty"]]
    assert not dirty, f"runs made from uncommitted code cannot be reproduced from their commit: {dirty}"


def test_real_records_match_their_sweep_spec(real):
    for r in real:
        assert (ROOT / "params" / f"{r['profile']}.yaml").exists(), f"{r['run_id']}: no profile {r['profile']}"
    sweep = pytest.importorskip("ebmlib.book.sweep")
    if not hasattr(sweep, "expected_config"):
        pytest.skip("ebmlib.book.sweep has no expected_config yet")
    for r in real:
        assert r["config"] == sweep.expected_config(r), f"{r['sweep']}/{r['run_id']}: config differs from the spec"


def test_real_final_runs_use_the_scale_their_search_chose(real):
    sel = R.select_scales(real)
    for r in real:
        if r["stage"] != "final":
            continue
        s = sel.get((r["sweep"], r["method"]))
        if s is None:
            assert r["paper_rates"], f"{r['sweep']}/{r['run_id']}: no search recorded, so the paper's rates"
        else:
            assert r["lr_scale"] == s["lr_scale"], (f"{r['sweep']}/{r['run_id']}: scale {r['lr_scale']:g}, "
                                                    f"the search chose {s['lr_scale']:g}")


def test_real_not_run_notes_are_well_formed():
    R.load_not_run(REAL)  # raises on a malformed note

