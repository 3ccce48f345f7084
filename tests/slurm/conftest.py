"""Fixtures of the Slurm tests: a throw-away local Slurm cluster and a tiny tokenizer + shard set.

``slurm_cluster`` (session) installs Debian's ``slurmctld slurmd slurm-client munge`` when missing
(root and the Debian package registry needed; the tests skip with the reason if that fails),
then starts munged, slurmctld and two slurmd "nodes" n1, n2 on loopback from a temp directory
with ``cluster/start_local_slurm.sh`` (one node named after the host where mount/UTS namespaces
are not allowed), each advertising 2 fake GPUs; teardown stops exactly those daemons by PID.

Run: ``python -m pytest tests/slurm -q`` (as root).  ``-m "not slurm"`` leaves them out.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPTS = Path(__file__).resolve().parent / "cluster"
PACKAGES = ("munge", "slurm-client", "slurmctld", "slurmd")
FAKE_GPUS_PER_NODE = 2
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}

# ----------------------------------------------------------------------------- packages


def _missing_packages() -> list[str]:
    def installed(package: str) -> bool:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
        )
        return "install ok installed" in result.stdout

    return [p for p in PACKAGES if not installed(p)]


def _apt_install(packages: list[str]) -> str | None:
    """Install ``packages`` with apt-get; returns why it failed, or None."""
    if os.geteuid() != 0:
        return "the Slurm tests need root (slurmd runs job steps as their user)"
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        return "apt-get/dpkg not found (not a Debian-like system)"
    # keep the packages' postinst scripts from starting system-wide daemons
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    try:
        result = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:  # stale or empty package lists: refresh once
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            result = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    if result.returncode != 0:
        return f"`{' '.join(install)}` failed: {result.stderr.strip()[-300:]}"
    return None


# ----------------------------------------------------------------------------- cluster


def _free_port_block(count: int) -> int:
    """First of ``count`` consecutive TCP ports that are free on loopback now."""
    for _ in range(200):
        base = random.randint(20000, 60000 - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports found")


def _namespaces_allowed() -> bool:
    probe = ["unshare", "--uts", "--mount", "--propagation", "private", "--", "true"]
    return shutil.which("unshare") is not None and subprocess.run(probe, capture_output=True).returncode == 0


@dataclass
class Job:
    job_id: str
    state: str
    exit_code: int
    restarts: int
    fields: dict = field(repr=False, default_factory=dict)


@dataclass
class Cluster:
    """A running local cluster: submit sbatch scripts and wait for them."""

    directory: Path
    nodes: list[str]
    env: dict[str, str]

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, check=check)

    def submit(self, script: str, *args: str, options: tuple[str, ...] = (), env: dict | None = None) -> str:
        """``sbatch --parsable OPTIONS script ARGS`` from the repository root; returns the job id."""
        command = ["sbatch", "--parsable", *options, script, *args]
        result = subprocess.run(
            command, cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{' '.join(command)} failed: {result.stderr}"
        return result.stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[Job]:
        """Every job (array task) of ``job_id`` as ``scontrol show job`` sees it."""
        out = self.run("scontrol", "-o", "show", "job", job_id).stdout
        jobs = []
        for line in out.splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            code = int(fields.get("ExitCode", "0:0").split(":")[0])
            jobs.append(
                Job(fields["JobId"], fields["JobState"], code, int(fields.get("Restarts", 0)), fields)
            )
        return jobs

    def wait(self, job_id: str, timeout: float = 300, until=None) -> list[Job]:
        """Poll every 0.3 s (``sbatch --wait`` backs off to 32 s) until every task of the job is
        in a final state, or ``until(jobs)`` is true; fails the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.jobs(job_id)
            if until(jobs) if until else all(j.state in FINAL_STATES for j in jobs):
                return jobs
            time.sleep(0.3)
        pytest.fail(f"job {job_id} not done after {timeout}s: {self.jobs(job_id)}\n{self.daemon_logs()}")

    def daemon_logs(self, lines: int = 15) -> str:
        parts = []
        for log in sorted((self.directory / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def _cluster_env(directory: Path) -> dict[str, str]:
    # nothing from an enclosing Slurm job or the user's own settings of the scripts' knobs
    knobs = {"ACCEL_CONFIG", "PROCS_PER_NODE", "MAIN_PORT", "ACCEL_ARGS", "REQUEUE", "STOP_TIMEOUT", "VENV"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in knobs and not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))
    }
    bin_dir = str(Path(sys.executable).parent)  # the venv running the tests runs the jobs too
    env.update(
        SLURM_CONF=str(directory / "slurm.conf"),
        SLURMTEST_DIR=str(directory),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def slurm_cluster():
    missing = _missing_packages() if shutil.which("dpkg-query") else list(PACKAGES)
    if missing:
        reason = _apt_install(missing)
        if reason:
            pytest.skip(f"Slurm is not installed and could not be: {reason}")
    nnodes = 2 if _namespaces_allowed() else 1
    directory = Path(tempfile.mkdtemp(prefix="pipeline-slurm-"))
    directory.chmod(0o755)  # munged wants its socket directory world-readable
    env = _cluster_env(directory)
    port = _free_port_block(1 + nnodes)
    start_env = {
        **env,
        "SLURMTEST_NNODES": str(nnodes),
        "SLURMTEST_GPUS": str(FAKE_GPUS_PER_NODE),
        "SLURMTEST_CTLD_PORT": str(port),
        "SLURMTEST_SLURMD_PORT": str(port + 1),
    }
    start = subprocess.run(
        [str(CLUSTER_SCRIPTS / "start_local_slurm.sh")],
        env=start_env,
        capture_output=True,
        text=True,
        check=False,
    )
    nodes = ["n1", "n2"] if nnodes == 2 else [socket.gethostname().split(".")[0]]
    cluster = Cluster(directory, nodes, env)
    try:
        assert start.returncode == 0, f"local Slurm did not start:\n{start.stderr}\n{cluster.daemon_logs()}"
        yield cluster
    finally:
        subprocess.run(
            [str(CLUSTER_SCRIPTS / "stop_local_slurm.sh")], env=env, capture_output=True, check=False
        )
        shutil.rmtree(directory, ignore_errors=True)


# ----------------------------------------------------------------------------- data


def synthetic_documents(n_docs: int, seed: int) -> list[str]:
    """Sentences over a Zipf-distributed vocabulary of made-up words."""
    rng = random.Random(seed)
    syllables = ["ka", "to", "mi", "ra", "su", "ne", "lo", "vi", "pe", "ru", "sa", "ko", "ta", "me", "no"]
    words = ["the", "and", "of"] + ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(400)]
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(8, 40))) for _ in range(n_docs)]


@dataclass
class TinyData:
    corpus: Path  # three files, so a 2-task shard array has work for both tasks
    tokenizer: Path
    shards: Path  # made by a single-process `pipeline shard`
    shard_args: list[str]  # the shard stage arguments that made `shards` (output_dir excluded)
    work: Path  # scratch directory for the tests' outputs and job logs


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    from pipeline.cli import main

    work = tmp_path_factory.mktemp("slurm-data")
    corpus = work / "corpus"
    corpus.mkdir()
    for index in range(3):
        (corpus / f"part{index}.txt").write_text("\n".join(synthetic_documents(600, seed=index)) + "\n")
    tokenizer, shards = work / "tokenizer", work / "shards"
    assert main(["tokenizer", f"input=[{corpus}]", f"output_dir={tokenizer}", "vocab_size=600"]) == 0
    shard_args = [
        f"input=[{corpus}]",
        f"tokenizer={tokenizer}",
        "seq_len=64",
        "val_fraction=0.1",
        "docs_per_unit=200",
        "num_proc=1",
        "progress=false",
    ]
    assert main(["shard", *shard_args, f"output_dir={shards}"]) == 0
    (work / "logs").mkdir()
    return TinyData(corpus, tokenizer, shards, shard_args, work)
