"""The shipped alert rules, unit-tested by Prometheus's own ``promtool test rules``; and a rule
broken on purpose is caught by the same tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make test` installs Debian's prometheus package"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_rules_are_valid_and_their_tests_pass() -> None:
    checked = promtool("check", "rules", "rules.yml", cwd=RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "rules_test.yml", cwd=RULES)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_rule_broken_on_purpose_fails_its_tests(tmp_path: Path) -> None:
    shutil.copy(RULES / "rules_test.yml", tmp_path)
    rules = (RULES / "rules.yml").read_text()
    broken = rules.replace(
        "max by (service) (orderflow_saga_stuck) > 0", "max by (service) (orderflow_saga_stuck) > 5"
    )
    assert broken != rules
    (tmp_path / "rules.yml").write_text(broken)
    tested = promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "OrderflowSagasStuck" in tested.stdout + tested.stderr


def test_the_scrape_config_is_valid(tmp_path: Path) -> None:
    checked = promtool("check", "config", "prometheus.yml", cwd=RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
