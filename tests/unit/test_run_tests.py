"""scripts/run_tests.py (`make test`): two real pytest lanes side by side; a failing lane's failures
are printed again at the very end, where CI's kept tail of the output still shows them."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lanes(tmp_path: Path) -> dict[str, list[str]]:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "test_fine.py").write_text("def test_fine():\n    assert True\n")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "test_broken.py").write_text(
        "def test_fine():\n    assert True\n\n"
        "def test_broken():\n    got = 41\n    assert got == 42, 'the answer moved'\n")
    return {"e2e": [str(tmp_path / "ok")], "rest": [str(tmp_path / "bad")]}


def test_a_failing_lane_is_summed_up_last_and_sets_the_exit_status(tmp_path):
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('run_tests', {str(ROOT / 'scripts' / 'run_tests.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "from pathlib import Path\n"
        f"sys.exit(m.run({_lanes(tmp_path)!r}, Path({str(tmp_path / 'bt')!r}), [], False))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    out = p.stdout.splitlines()
    ends = [i for i, l in enumerate(out) if l.startswith("lane ")]
    assert [out[i].split(":")[0] for i in ends] == ["lane e2e", "lane rest"]
    assert "passed" in out[ends[0]] and "FAILED (pytest exit 1)" in out[ends[1]]
    tail = out[ends[1] + 1:]
    # (pytest adds " - <message>" to the line when the terminal is wide enough for it)
    assert any(l.strip().startswith("[rest] FAILED") and "test_broken.py::test_broken" in l for l in tail), tail
    assert any(l.strip().startswith("[rest] test_broken: E") and "the answer moved" in l for l in tail), tail
    assert not any("test_fine" in l for l in tail), tail


def test_a_lane_that_died_before_its_summary_gives_its_last_lines(tmp_path):
    spec = importlib.util.spec_from_file_location("run_tests_mod", ROOT / "scripts" / "run_tests.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    log = tmp_path / "rest.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "Killed\n")
    got = m.failures(log, limit=5)
    assert got == ["line 96", "line 97", "line 98", "line 99", "Killed"]
    assert m.failures(tmp_path / "missing.log")[0].startswith("(its log cannot be read")
