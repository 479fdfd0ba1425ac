"""Only what changed re-runs (``python -m ebmlib book``), and what the pipeline does to executed notebooks.

The re-execution tests run a tiny book of two fake chapters in a temporary root (a copy of ``ebmlib``
beside them, so the dependency analysis sees the real modules): editing prose re-executes nothing,
editing a code cell, an imported module, a parameter or a file a chapter read re-executes that chapter
only. The other tests need no kernel: dependency analysis, parameter folding, stream merging, the
figure notes and the install cell of the site.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

from ebmlib.book import cache, execute, reproduce, run, site
from ebmlib.book.claims import at_most, within

HEAD = textwrap.dedent("""\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
        format_version: 0.13
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---
    """)

PARAMS = '```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = "book"\nbuild_dir = ""\nseed = 0\n```\n'

CH_A = HEAD + "# A\n\nProse of A.\n\n" + PARAMS + textwrap.dedent("""
    ```{code-cell} ipython3
    import ebmlib as eb

    print("a", eb.check_real("x", 1.0 + seed))
    ```
    """)

CH_B = HEAD + "# B\n\nProse of B.\n\n" + PARAMS + textwrap.dedent("""
    ```{code-cell} ipython3
    import ebmlib as eb
    import ebmlib.book as ebb

    run = ebb.Run("02-b", profile=profile, seed=seed, build_dir=build_dir or None)
    print("b", open("data.txt").read().strip(), eb.cosine.__name__)
    ```
    """)


def _make_book(root: Path) -> None:
    (root / "chapters").mkdir(parents=True)
    (root / "params").mkdir()
    (root / "_toc.yml").write_text("format: jb-book\nroot: chapters/intro\nchapters:\n"
                                   "  - file: chapters/01-a\n  - file: chapters/02-b\n")
    (root / "params" / "smoke.yaml").write_text("all:\n  seed: 0\n")
    (root / "chapters" / "intro.md").write_text("# Intro\n")
    (root / "chapters" / "01-a.md").write_text(CH_A)
    (root / "chapters" / "02-b.md").write_text(CH_B)
    (root / "chapters" / "data.txt").write_text("one\n")
    (root / "requirements.lock").write_text("torch==2.13.0\n")
    shutil.copytree(ROOT / "ebmlib", root / "ebmlib", ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    root = tmp_path_factory.mktemp("book")
    _make_book(root)
    build = root / "_build"
    first = execute.execute(["all"], profile="smoke", build_dir=build, root=root, log=lambda s: None, reuse=True)
    return root, build, first


def _again(root: Path, build: Path, **kw) -> dict[str, float]:
    return execute.execute(["all"], profile="smoke", build_dir=build, root=root, log=lambda s: None, reuse=True, **kw)


@pytest.mark.slow
def test_a_clean_build_executes_everything_and_records_its_inputs(book):
    root, build, first = book
    assert sorted(first) == ["01-a", "02-b"]
    status = execute.build_status(build)
    assert {k: v["status"] for k, v in status["chapters"].items()} == {"01-a": "executed", "02-b": "executed"}
    rec = json.loads(cache.record_path(build / "executed" / "chapters" / "02-b.ipynb").read_text())
    assert "ebmlib/measures.py" in rec["inputs"]["modules"] and "ebmlib/book/run.py" in rec["inputs"]["modules"]
    assert "open|root:chapters/data.txt" in rec["reads"], rec["reads"]
    rec_a = json.loads(cache.record_path(build / "executed" / "chapters" / "01-a.ipynb").read_text())
    assert "ebmlib/measures.py" not in rec_a["inputs"]["modules"]


@pytest.mark.slow
def test_only_what_changed_re_runs(book):
    root, build, _ = book
    a, b, data = (root / "chapters" / n for n in ("01-a.md", "02-b.md", "data.txt"))
    a.write_text(a.read_text().replace("Prose of A.", "Prose of A, edited at length."))
    b.write_text(b.read_text().replace("# B", "# B, a new title"))
    assert _again(root, build) == {}, "editing prose re-executed a chapter"
    assert {v["status"] for v in execute.build_status(build)["chapters"].values()} == {"reused"}
    a.write_text(a.read_text().replace('print("a"', 'print("A"'))
    assert list(_again(root, build)) == ["01-a"], "a code edit must re-execute that chapter only"
    measures = root / "ebmlib" / "measures.py"
    measures.write_text(measures.read_text() + "\n# touched\n")
    assert list(_again(root, build)) == ["02-b"], "editing measures.py re-executes the chapter using eb.cosine only"
    data.write_text("two\n")
    assert list(_again(root, build)) == ["02-b"], "a file the chapter read changed"
    (build / "executed" / "chapters" / "01-a.ipynb").unlink()
    assert list(_again(root, build)) == ["01-a"], "a missing notebook"
    nb = json.loads((build / "executed" / "chapters" / "01-a.ipynb").read_text())
    tags = [t for c in nb["cells"] for t in c.get("metadata", {}).get("tags", [])]
    assert "injected-parameters" not in tags and tags.count("parameters") == 1
    src = next(c["source"] for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    assert 'profile = "smoke"' in src and "seed = 0" in src and "(params/smoke.yaml)" in src


def test_stale_reason_names_what_changed(tmp_path):
    _make_book(tmp_path)
    code = ["profile = 1", "import ebmlib as eb\neb.cosine"]
    inputs = cache.chapter_inputs(code, {"seed": 0}, tmp_path)
    record = {"key": cache.input_key(inputs), "inputs": inputs, "reads": {}, "outputs": []}
    assert cache.stale_reason(record, inputs, root=tmp_path, build=tmp_path) is None
    assert cache.stale_reason(None, inputs, root=tmp_path, build=tmp_path) == "never executed in this build folder"
    new = cache.chapter_inputs(code, {"seed": 1}, tmp_path)
    assert cache.stale_reason(record, new, root=tmp_path, build=tmp_path) == "changed: its parameters"
    new = cache.chapter_inputs([code[0], code[1] + "  # edited"], {"seed": 0}, tmp_path)
    assert cache.stale_reason(record, new, root=tmp_path, build=tmp_path) == "changed: its code cells"
    (tmp_path / "requirements.lock").write_text("torch==2.13.0\nnumpy==2.4.6\n")
    new = cache.chapter_inputs(code, {"seed": 0}, tmp_path)
    assert cache.stale_reason(record, new, root=tmp_path, build=tmp_path) == "changed: requirements.lock"
    record["key"], record["inputs"] = cache.input_key(new), new
    measures = tmp_path / "ebmlib" / "measures.py"
    measures.write_text(measures.read_text() + "# edited\n")
    new = cache.chapter_inputs(code, {"seed": 0}, tmp_path)
    assert cache.stale_reason(record, new, root=tmp_path, build=tmp_path) == "changed: library files ebmlib/measures.py"
    (tmp_path / "ebmlib" / "langevin.py").write_text("# not used by this code\n")
    assert cache.chapter_inputs(code, {"seed": 0}, tmp_path) == new
    record["outputs"] = ["figures/01-a/x.png"]
    record["key"], record["inputs"] = cache.input_key(new), new
    assert cache.stale_reason(record, new, root=tmp_path, build=tmp_path) == "missing output figures/01-a/x.png"


def test_dependencies_follow_the_names_used():
    modules = cache.module_graph(ROOT / "ebmlib")
    only_checks = cache.used_modules(["import ebmlib as eb\neb.check_real('x', 1.0)"], modules)
    assert only_checks == {"ebmlib.checks"}
    relax = cache.used_modules(["import ebmlib as eb", "r = eb.relax(net, x)"], modules)  # alias from another cell
    assert {"ebmlib.dynamics", "ebmlib.network", "ebmlib._loop"} <= relax and "ebmlib.langevin" not in relax
    book = cache.used_modules(["from ebmlib.book import Run"], modules)
    assert "ebmlib.book.run" in book and "ebmlib.book.records" not in book
    whole = cache.used_modules(["import ebmlib as eb\nhelp(eb)"], modules)
    assert "ebmlib.langevin" in whole and "ebmlib.book.site" not in whole
    assert cache.used_modules(["%timeit 1\nimport ebmlib.book as ebb\nebb.at_most"], modules) >= {"ebmlib.book.claims"}
    with pytest.raises(FileNotFoundError, match="pkg_dir"):
        cache.module_graph(ROOT / "chapters")
    with pytest.raises(TypeError, match="code"):
        cache.chapter_inputs("x = 1", {}, ROOT)


def test_the_reads_log_path_is_the_one_run_writes(tmp_path):
    assert cache.reads_path(tmp_path, "chapters/01-energy") == tmp_path / "cache" / "01-energy.reads"
    log = tmp_path / "log"
    log.write_text(f"open\t{ROOT / 'params' / 'smoke.yaml'}\nlist\t{ROOT / 'params'}\nopen\t{ROOT / 'ebmlib' / 'io.py'}\n"
                   "open\t/etc/hostname\n")
    reads = cache.hash_reads(log, root=ROOT, build=tmp_path)
    assert set(reads) == {"open|root:params/smoke.yaml", "list|root:params"}, reads


def _nb(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(src, tags=(), outputs=()):
    return {"cell_type": "code", "source": src, "metadata": {"tags": list(tags)}, "outputs": list(outputs)}


def test_fold_parameters_keeps_one_cell_with_the_values_used():
    nb = _nb(_code('profile = "book"   # smoke | book | paper\nseed = 0\nsizes = [1,\n         2]  # layers',
                   ["parameters"]),
             _code('# Parameters\nprofile = "smoke"\nseed = 3\nsizes = [4, 5, 6]\nextra = "x"\n',
                   ["injected-parameters"]),
             _code("print(seed)"))
    assert execute.fold_parameters(nb, profile="smoke", overrides={"seed": 3})
    assert len(nb["cells"]) == 2
    src = nb["cells"][0]["source"]
    assert src.splitlines()[0] == '# Values used in this run: profile "smoke" (params/smoke.yaml), overridden with -p: seed'
    assert 'profile = "smoke"   # smoke | book | paper' in src and "seed = 3" in src
    assert "sizes = [4, 5, 6]  # layers" in src and 'extra = "x"' in src and "[1," not in src
    assert not execute.fold_parameters(nb, profile="smoke")  # nothing left to fold
    two = _nb(_code("eps = 0.5; beta = 1e-6  # steps", ["parameters"]),
              _code("eps = 0.25\nbeta = 0.001", ["injected-parameters"]))
    execute.fold_parameters(two, profile="book")
    assert two["cells"][0]["source"].splitlines()[1] == "eps = 0.25; beta = 0.001  # steps"
    long = _nb(_code('a = 1  # ' + "c" * 80, ["parameters"]), _code("a = " + repr("v" * 30), ["injected-parameters"]))
    execute.fold_parameters(long, profile="book")
    assert all(len(line) <= 100 for line in long["cells"][0]["source"].splitlines())
    names = [f"method_number_{i}" for i in range(9)]
    wide = _nb(_code('methods = ["bp"]  # which', ["parameters"]), _code(f"methods = {names!r}", ["injected-parameters"]))
    execute.fold_parameters(wide, profile="book")
    src = wide["cells"][0]["source"]
    assert all(len(line) <= 100 for line in src.splitlines()) and src.count("\n") >= 2, src
    ns: dict = {}
    exec(src, ns)
    assert ns["methods"] == names
    with pytest.raises(TypeError, match="nb"):
        execute.fold_parameters([], profile="book")


def test_merge_streams_leaves_one_block_and_final_lines():
    out = [{"output_type": "stream", "name": "stdout", "text": "epoch 1\n"},
           {"output_type": "stream", "name": "stdout", "text": "epoch 2\n"},
           {"output_type": "stream", "name": "stderr", "text": "\r 10%|#  |\r 50%|###  |\r100%|#####|\n"},
           {"output_type": "stream", "name": "stderr", "text": "\r 10%|#  |\r" + " " * 20 + "\r"},
           {"output_type": "display_data", "data": {"text/plain": "x"}, "metadata": {}},
           {"output_type": "stream", "name": "stdout", "text": "done\n"}]
    nb = _nb(_code("x", outputs=out))
    assert execute.merge_streams(nb) == 2
    outs = nb["cells"][0]["outputs"]
    assert [o.get("name") for o in outs] == ["stdout", "stderr", None, "stdout"]
    assert outs[0]["text"] == "epoch 1\nepoch 2\n" and outs[1]["text"] == "100%|#####|\n"


def test_figure_notes_put_claims_and_provenance_under_the_figure(tmp_path):
    fig_dir = tmp_path / "figures" / "01-x"
    fig_dir.mkdir(parents=True)
    claims = [at_most("err", 1e-9, 1e-6, "closed form and autograd agree"), within("rate", 0.5, 0.0, 0.4, "bad")]
    side = {"figure": "fig_a", "chapter": "01-x", "png": "fig_a.png", "dpi": 200, "data": {"y": [1, 2]},
            "claims": {c.name: c.to_json() for c in claims}}
    (fig_dir / "fig_a.json").write_text(json.dumps(side))
    (fig_dir / "fig_a.png").write_bytes(b"png")
    (tmp_path / "executed" / "chapters").mkdir(parents=True)
    cache.record_path(tmp_path / "executed" / "chapters" / "01-x.ipynb").write_text(
        json.dumps({"profile": "smoke", "overrides": {"seed": 2}}))
    glue = {"output_type": "display_data", "metadata": {"scrapbook": {"name": "fig_a"}},
            "data": {"application/papermill.record/image/png": "AAAA"}}
    shown = {"output_type": "display_data", "metadata": {"ebmlib": {"claims_of": "fig_a"}},
             "data": {"text/html": "<table/>", "text/plain": "claims"}}
    nb = _nb({"cell_type": "markdown", "metadata": {}, "source": "Intro."},
             _code("fig = ...", outputs=[glue, shown]),
             {"cell_type": "markdown", "metadata": {},
              "source": "```{glue:figure} fig_a\n:name: fig-a\n\nCaption.\n```\n\nProse after."})
    assert site.annotate_figures(nb, "chapters/01-x", tmp_path) == {"fig_a": True}
    anchor = reproduce.code_anchor("01-x", "fig_a")
    assert nb["cells"][1]["source"] == f'<span id="{anchor}"></span>'
    assert nb["cells"][2]["outputs"] == [glue], "the claims output moves under the figure"
    text = nb["cells"][3]["source"]
    figure_end, rest = text.split("```\n", 1)[0], text.split("Caption.\n```", 1)[1]
    assert "ebm-claims" in rest.split("Prose after.")[0], "the notes stand right under the figure"
    assert f'href="#{anchor}"' in rest and 'href="../_static/data/01-x/fig_a.json"' in rest
    assert "fig_a.data.json" in rest and "reproduce.html#repro-01-x-fig-a" in rest
    assert "python -m ebmlib run 01-x --profile smoke -p seed 2" in rest and "re-runs the whole chapter" in rest
    assert "✘ <strong>FAILS</strong>" in rest and "1 × 10⁻⁹" in rest and "∈ [0, 0.4]" in rest
    assert "\n\n" not in rest.split("Prose after.")[0].strip(), "a blank line would end the HTML block"
    assert "glue:figure" in figure_end


def test_figure_data_are_copied_into_the_site(tmp_path):
    fig_dir = tmp_path / "figures" / "01-x"
    fig_dir.mkdir(parents=True)
    (fig_dir / "f.json").write_text(json.dumps({"figure": "f", "png": "f.png", "data": {"y": [3]}, "claims": {}}))
    (fig_dir / "f.png").write_bytes(b"png")
    (fig_dir / "trained.npz").write_bytes(b"big")
    site._copy_figure_data(tmp_path, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "01-x").iterdir()) == ["f.data.json", "f.json", "f.png"]
    assert json.loads((tmp_path / "out" / "01-x" / "f.data.json").read_text()) == {"y": [3]}


def test_launch_buttons_and_install_cell_follow_the_repository(tmp_path):
    (tmp_path / "_toc.yml").write_text("root: x\n")
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/OWNER/book\n")
    assert site.repository(tmp_path) is None
    cell = site.install_cell(None)
    assert cell["metadata"]["tags"] == ["remove-cell"] and "raise ImportError" in cell["source"]
    compile(cell["source"], "install", "exec")
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/me/book/\n  branch: pages\n")
    repo = site.repository(tmp_path)
    assert repo == {"url": "https://github.com/me/book", "branch": "pages"}
    src = site.install_cell(repo)["source"]
    compile(src, "install", "exec")
    assert '"--branch", "pages"' in src and "https://github.com/me/book" in src and site.CPU_TORCH_INDEX in src
    assert 'find_spec("ebmlib") is None' in src
    with pytest.raises(ValueError, match="repo"):
        site.install_cell({"branch": "main"})
    assert site.repository(ROOT) is None or "OWNER" not in site.repository(ROOT)["url"]


def test_binder_environment_pins_a_cpu_torch():
    req = (ROOT / ".binder" / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in req
    assert "-r ../requirements.lock" in req and "-e ." in req
    assert "torch==2.13.0" in (ROOT / "requirements.lock").read_text().splitlines()
    assert "jupytext" in (ROOT / ".binder" / "postBuild").read_text()


def test_numbers_for_readers():
    assert run.sci(8.9e-16) == "8.9 × 10⁻¹⁶" and run.sci(2e5) == "2 × 10⁵" and run.sci(0.0123) == "0.0123"
    assert run.sci(0) == "0" and run.sci(None) == "none" and run.sci(float("nan")) == "nan"
    with pytest.raises(TypeError, match="x"):
        run.sci("1")
    with pytest.raises(ValueError, match="digits"):
        run.sci(1.0, digits=0)


def test_figures_are_saved_at_200_dpi_and_shown_at_screen_size(tmp_path, capsys):
    import struct

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = run.Run("00-x", profile="smoke", seed=0, build_dir=str(tmp_path))
    fig, ax = plt.subplots(figsize=(4.0, 2.0))
    ax.plot([0, 1], [0, 1])
    r.save(fig, "line", data={"y": [0, 1]}, claims=[at_most("c", 1.0, 2.0, "fine")])
    png = (tmp_path / "figures" / "00-x" / "line.png").read_bytes()
    w, h = struct.unpack(">II", png[16:24])
    assert w >= 4.0 * 200 * 0.9, f"{w} px for 4 inches: under 200 dpi"
    img = run._screen_image(png, 110)
    assert abs(img.width - w * 110 / 200) <= 1
    assert json.loads((tmp_path / "figures" / "00-x" / "line.json").read_text())["dpi"] == 200
    assert "holds  c: 1 ≤ 2  (fine)" in capsys.readouterr().out


def test_a_reused_chapter_shows_todays_prose(tmp_path):
    src = tmp_path / "01-a.md"
    src.write_text(CH_A.replace("Prose of A.", "Prose of A, edited."))
    out = _code("print(1)", outputs=[{"output_type": "stream", "name": "stdout", "text": "1\n"}])
    executed = _nb({"cell_type": "markdown", "metadata": {}, "source": "# A\n\nProse of A."},
                   _code('# Values used\nprofile = "smoke"', ["parameters"]),
                   _code('import ebmlib as eb\n\nprint("a", eb.check_real("x", 1.0 + seed))', outputs=[out]))
    assert site.current_prose(executed, src)
    text = "".join(c["source"] for c in executed["cells"] if c["cell_type"] == "markdown")
    assert "Prose of A, edited." in text
    assert executed["cells"][-1]["outputs"] == [out] and 'profile = "smoke"' in executed["cells"][1]["source"]
    src.write_text(CH_A.replace('print("a"', 'print("b"'))
    assert not site.current_prose(executed, src), "code changed and not executed: the notebook stays as executed"
