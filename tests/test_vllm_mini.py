"""The bundled example tree migrates to its expected tree, byte for byte, and stays there."""

from __future__ import annotations

import shutil

import pytest

from conftest import FIXTURES
from helpers import moe_migrate, tree_bytes

MINI = FIXTURES / "vllm-mini"
EXPECTED = FIXTURES / "vllm-mini.expected"


@pytest.fixture
def mini(tmp_path):
    target = tmp_path / "vllm-mini"
    shutil.copytree(MINI, target)
    return target


def test_apply_writes_exactly_the_expected_tree(mini) -> None:
    result = moe_migrate(str(mini))
    assert result.returncode == 0, result.stderr.decode()
    assert tree_bytes(mini) == tree_bytes(EXPECTED)


def test_second_run_has_nothing_to_do(mini) -> None:
    moe_migrate(str(mini))
    again = moe_migrate(str(mini))
    assert again.returncode == 0
    assert b"0 rewritten" in again.stderr


def test_diff_writes_nothing_and_exits_1(mini) -> None:
    before = tree_bytes(mini)
    result = moe_migrate("--diff", str(mini))
    assert result.returncode == 1
    assert tree_bytes(mini) == before
    assert b"+++ b/vllm/model_executor/models/deepseek_v2.py" in result.stdout
    assert b"would rewrite" in result.stderr and b"would rewrite" not in result.stdout


def test_diff_applies_with_git_apply(mini, tmp_path) -> None:
    import subprocess

    patch = moe_migrate("--diff", str(mini)).stdout
    subprocess.run(["git", "apply", "-p1"], input=patch, cwd=mini, check=True)
    assert tree_bytes(mini) == tree_bytes(EXPECTED)


def test_check_passes_on_the_expected_tree(tmp_path) -> None:
    target = tmp_path / "expected"
    shutil.copytree(EXPECTED, target)
    result = moe_migrate("--check", str(target))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""


def test_process_pool_gives_the_serial_result(mini, tmp_path) -> None:
    serial = tmp_path / "serial"
    shutil.copytree(MINI, serial)
    assert moe_migrate("-j", "1", str(serial)).returncode == 0
    assert moe_migrate("-j", "2", str(mini)).returncode == 0
    assert tree_bytes(mini) == tree_bytes(serial) == tree_bytes(EXPECTED)
