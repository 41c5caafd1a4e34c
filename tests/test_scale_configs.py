"""The cluster recipe's files (docs/scale.md): accelerate configs that accelerate loads, SLURM scripts bash parses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_accelerate_configs_load_and_say_what_they_launch():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = {p.stem: load_config_from_file(str(p)) for p in sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))}
    assert sorted(configs) == ["cpu", "ddp", "deepspeed_zero2", "fsdp", "multinode"]
    cpu = configs["cpu"]  # what the multi-process tests and benchmarks/multiprocess.py run
    assert (str(cpu.distributed_type), cpu.num_processes, cpu.use_cpu) == ("DistributedType.MULTI_GPU", 2, True)
    assert (cpu.main_process_ip, cpu.rdzv_backend) == ("127.0.0.1", "static")
    multinode = configs["multinode"]
    assert multinode.num_processes == 8 * multinode.num_machines  # every GPU of every machine
    assert str(configs["deepspeed_zero2"].distributed_type) == "DistributedType.DEEPSPEED"
    assert configs["deepspeed_zero2"].deepspeed_config["zero_stage"] == 2
    assert str(configs["fsdp"].distributed_type) == "DistributedType.FSDP"
    assert configs["fsdp"].fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", ["train.sbatch", "finetune_subjects.sbatch"])
def test_slurm_scripts_parse(script):
    path = ROOT / "configs" / "slurm" / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    assert "#SBATCH" in text and "jointdiff" in text
