"""Markdown / HTML / PNG report: content, self-containment, and a render in headless chromium."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dreamprm_code.records import PASS, WRONG_ANSWER, Problem, Solution, StepScores
from dreamprm_code.records import TestCase as Case
from dreamprm_code.report.render import render_candidate, render_markdown
from dreamprm_code.report.tables import rich_table, table_rows
from dreamprm_code.report.write import write_report
from dreamprm_code.scaling.evaluate import EvalOptions, evaluate

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

COF = '''def main():
    """Read n and print the answer."""
    n = int(input())
    print(solve(n))


def solve(n):
    """Sum 1..n."""
    return n * (n + 1) // 2


main()
'''


@pytest.fixture(scope="module")
def evaluated():
    problems, solutions, orm, prm, beh = [], [], [], [], {}
    for k in range(9):
        pid = f"P{k}"
        problems.append(Problem(pid, f"title {k}", "s", "t", ("easy", "medium", "hard")[k % 3],
                                [Case("stdin", "1\n", "1\n", public=True)]))
        for i in range(4):
            ok = (i + k) % 3 == 0
            code = COF.replace("n * (n + 1)", "n * (n + 1)" if ok else "n * n")
            sol = Solution(pid, i, code, verdict=PASS if ok else WRONG_ANSWER)
            solutions.append(sol)
            orm.append(StepScores(sol.id, pid, [0.6 if ok else 0.4]))
            # min ranks right (a wrong candidate's weak first step); last ranks wrong.
            prm.append(StepScores(sol.id, pid, [0.9, 0.85] if ok else [0.2, 0.95]))
            beh[sol.id] = "ok" if ok else f"bad{i}"
    sets = {"orm": orm, "labels": prm}
    rep = evaluate(problems, solutions, sets, EvalOptions(aggregations=("min", "last"), resamples=200, subsamples=5, baselines=("orm",)), behaviours=beh)
    return rep, problems, solutions, sets


def test_markdown_has_paper_rows(evaluated):
    rep, *_ = evaluated
    md = render_markdown(rep)
    for label in ("Policy", "Random", "Majority vote", "ORM", "DreamPRM-Code (label correction)", "Oracle (pass@N)"):
        assert f"| {label} |" in md
    assert "Easy (n=3)" in md and "Overall (n=9)" in md
    assert "## Every aggregation" in md
    assert "| DreamPRM-Code (label correction): last = last/vote-mean | 0.0 [0.0, 0.0] |" in md
    assert "| DreamPRM-Code (label correction) weighted vote (sum, last) | 100.0 [100.0, 100.0] |" in md
    # ORM has one step and right candidates agree: all its methods pick the same, so they share a row.
    assert "| ORM: min = min/vote-sum = min/vote-mean = last = last/vote-sum = last/vote-mean |" in md
    assert "| ORM (last) |" not in md
    header, rows = table_rows(rep)
    assert len(rows) == 8  # with the two score sets' weighted votes
    assert [r.label for r in rows].count("ORM weighted vote (sum)") == 1


def test_candidate_steps_coloured_by_score():
    sol = Solution("P", 0, COF, verdict=PASS)
    page = render_candidate(sol, {"prm": StepScores(sol.id, "P", [0.0, 1.0])}, "prm", ["PRM-CoF"])
    spans = re.findall(r'<span class="step" style="background:([^"]+)"', page)
    assert spans == ["hsl(0,70%,85%)", "hsl(120,70%,85%)"]
    assert "def solve(n):" in page and "chosen by: PRM-CoF" in page
    # Misaligned scores are shown but not used for colour.
    page = render_candidate(sol, {"prm": StepScores(sol.id, "P", [0.5])}, "prm", [])
    assert "1 scores for 2 steps" in page
    assert "hsl(" not in page


def test_write_report_files_and_self_contained_html(evaluated, tmp_path):
    rep, problems, solutions, sets = evaluated
    written = write_report(rep, tmp_path, problems=problems, solutions=solutions, score_sets=sets, sample=3)
    for name in ("report.json", "report.md", "report.html", "scaling.png", "difficulty.png", "scaling-all.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "scaling.png").read_bytes().startswith(PNG_MAGIC)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["best_baseline"] == "orm/min"
    assert {m["name"] for m in data["methods"]} >= {"policy", "random", "majority", "orm/min", "labels/last", "oracle"}
    page = (tmp_path / "report.html").read_text()
    # Self-contained: no external URLs in src/href, images embedded as data URIs.
    assert not re.search(r'(src|href)="(?!data:)', page)
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(imgs) == 3
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in imgs)
    assert page.count('class="problem"') == 3
    assert set(written) >= {"json", "md", "html"}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_renders_in_headless_chromium(evaluated, tmp_path):
    rep, problems, solutions, sets = evaluated
    write_report(rep, tmp_path, problems=problems, solutions=solutions, score_sets=sets, sample=2)
    profile = tmp_path / "profile"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--virtual-time-budget=3000", "--dump-dom", (tmp_path / "report.html").as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '<table id="main-table">' in dom
    assert dom.count("<tr") >= 6
    assert "DreamPRM-Code (label correction)" in dom
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', dom)) == 3
    assert 'id="candidates"' in dom


def test_label_correction_figures_from_checkpoints(evaluated, tmp_path):
    rep, problems, solutions, sets = evaluated
    ckpt = tmp_path / "prm-labels"
    ckpt.mkdir()
    summary = {
        "mode": "labels",
        "initial_labels": [0.2, 0.5, 0.9, 0.4],
        "corrected_labels": [0.1, 0.7, 0.95, 0.4],
        "outer_steps": 2,
        "trajectory": [{"outer_step": 1, "values": [0.15, 0.6]}, {"outer_step": 2, "values": [0.1, 0.7]}],
        "trajectory_ids": ["a#0@0", "a#1@0"],
    }
    (ckpt / "correction.json").write_text(json.dumps(summary))
    no_meta = tmp_path / "orm"
    no_meta.mkdir()
    out = tmp_path / "report"
    written = write_report(rep, out, checkpoints={"prm-labels": ckpt, "orm": no_meta}, sample=0)
    assert {"prm-labels-label_histogram.png", "prm-labels-label_trajectory.png"} <= set(written)
    assert (out / "prm-labels-label_histogram.png").read_bytes().startswith(PNG_MAGIC)
    page = (out / "report.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 5
    assert "Label correction (prm-labels)" in (out / "report.md").read_text()


VERDICT_WORDS = re.compile(r"\b(win|wins|loss|losses|won|lost|beats?)\b", re.IGNORECASE)


def visible_text(page: str) -> str:
    """The text a reader sees: no style block, no tags, entities decoded."""
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def rich_text(table) -> str:
    from rich.console import Console

    console = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


def one_difficulty(n_problems: int, scores_per: int = 1):
    """``n_problems`` medium problems, four candidates each; one score set ranking a right one first."""
    problems, solutions, orm, beh = [], [], [], {}
    for k in range(n_problems):
        pid = f"M{k}"
        problems.append(Problem(pid, pid, "s", "t", "medium", [Case("stdin", "1\n", "1\n", public=True)]))
        for i in range(4):
            ok = i == k % 4 or (k % 3 == 0 and i == 0)
            sol = Solution(pid, i, COF, verdict=PASS if ok else WRONG_ANSWER)
            solutions.append(sol)
            orm.append(StepScores(sol.id, pid, [0.7 if ok else 0.3] * scores_per))
            beh[sol.id] = "ok" if ok else f"bad{i}"
    return problems, solutions, {"orm": orm}, beh


def test_small_sample_prints_no_verdict_words(evaluated, tmp_path):
    rep, problems, solutions, sets = evaluated
    assert not rep.verdicts_allowed
    # The evaluation itself still finds a significant gap (the PRM at min is the oracle here)...
    assert rep.method("labels/min").vs_policy["overall"].verdict == "win"
    write_report(rep, tmp_path, problems=problems, solutions=solutions, score_sets=sets, sample=2)
    md = (tmp_path / "report.md").read_text()
    page = visible_text((tmp_path / "report.html").read_text())
    terminal = rich_text(rich_table(rep)) + rich_text(rich_table(rep, all_aggregations=True))
    # ...but with 9 problems no report calls it one.
    for text in (md, page, terminal):
        assert not VERDICT_WORDS.search(text), VERDICT_WORDS.search(text)
    assert "Only 9 problems: too small a sample" in md and "Only 9 problems: too small a sample" in page
    assert "+" in md.split("| DreamPRM-Code (label correction) |")[1].split("\n")[0]  # intervals stay


def test_enough_problems_one_difficulty_one_column(tmp_path):
    problems, solutions, sets, beh = one_difficulty(40)
    rep = evaluate(problems, solutions, sets, EvalOptions(aggregations=("min", "last"), resamples=200,
                                                         subsamples=4, baselines=()), behaviours=beh)
    assert rep.verdicts_allowed
    header, rows = table_rows(rep)
    assert header[1] == "Overall, all medium (n=40)" and len(header) == 4
    assert all(len(r.cells) == 1 for r in rows)
    write_report(rep, tmp_path, sample=0)
    md = (tmp_path / "report.md").read_text()
    assert "| ORM | " in md and " win |" in md and "too small" not in md
    assert "Medium (n=" not in md
    # One step per candidate: min and last agree everywhere, so there is no every-aggregation table.
    assert "Every aggregation" not in md and not (tmp_path / "scaling-all.png").exists()
    page = (tmp_path / "report.html").read_text()
    assert '<span class="win">' in page
    assert len(re.findall(r"<tr>", page.split('id="pass-at-k"')[1].split("</table>")[0])) == 2  # header and one row


def test_html_is_autoescaped(tmp_path):
    problems, solutions, sets, beh = one_difficulty(2)
    problems[0].title = "<script>alert(1)</script>"
    rep = evaluate(problems, solutions, sets, EvalOptions(resamples=50, subsamples=2), behaviours=beh)
    write_report(rep, tmp_path, problems=problems, solutions=solutions, score_sets=sets, sample=2,
                 title="A & B <i>")
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>A &amp; B &lt;i&gt;</title>" in page
