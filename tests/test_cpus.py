"""persona_engine.cpus: `persona serve --cpus` parses CPU lists, pins the process (checked in a
child process, so the test runner keeps its CPUs) and says clearly what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from persona_engine.cli import cli
from persona_engine.cpus import parse_cpus
from persona_engine.errors import InvalidInputError


def test_parse_cpus() -> None:
    assert parse_cpus("0") == [0]
    assert parse_cpus("3, 1") == [1, 3]
    assert parse_cpus("0-2,5,1") == [0, 1, 2, 5]
    for bad in ("", "a", "2-1", "-1", "0,,1"):
        with pytest.raises(InvalidInputError, match="--cpus"):
            parse_cpus(bad)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux only")
def test_pinning_moves_the_process_and_torch_to_those_cpus() -> None:
    code = (
        "import os, torch\n"
        "from persona_engine.cpus import pin_to_cpus\n"
        "torch.set_num_threads(3)\n"
        "print(pin_to_cpus([0]), sorted(os.sched_getaffinity(0)), torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[0]", "[0]", "1"]


def test_serve_with_cpus_the_machine_lacks_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    n = os.cpu_count() or 1
    for bad, message in (
        (str(n), f"not a set of this machine's CPUs (0-{n - 1})"),
        ("x", "CPU numbers like"),
    ):
        r = CliRunner().invoke(cli, ["serve", "--no-auth", "--cpus", bad])
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux only")
def test_the_bench_client_gets_its_cpus_and_torch_threads_back() -> None:
    code = (
        "import os, torch\n"
        "from persona_engine.bench.serve import client_on_cpus\n"
        "torch.set_num_threads(3)\n"
        "before = sorted(os.sched_getaffinity(0))\n"
        "with client_on_cpus('0'):\n"
        "    inside = (sorted(os.sched_getaffinity(0)), torch.get_num_threads())\n"
        "print(inside == ([0], 1), sorted(os.sched_getaffinity(0)) == before, torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "3"]
