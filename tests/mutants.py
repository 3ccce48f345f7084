"""Mutation check: break one guarantee on purpose and watch the tests named for it fail.

    python -m tests.mutants                     # list the broken variants
    python -m tests.mutants resume-restarts     # run some: each in its own scratch copy of the tree
    python -m tests.mutants all

Each variant is one textual edit (file, old text -> new text) applied to a scratch copy of the
working tree (tracked and untracked files; this tree is never touched) and the tests named for it
run there.  Verdicts: ``killed`` (a named test failed: the guarantee is tested), ``SURVIVED`` (they
all passed: it is not), ``hung`` (killed by the timeout: a failure too, the run would never end),
``stale`` (the edit no longer applies because the code moved: update the edit).  Every named
test runs (no ``-x``); a killed variant lists the named tests that still passed.  tests/README.md
keeps the table of what killed what; this file is how to re-run it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 2400


@dataclass(frozen=True)
class Mutant:
    name: str
    guarantee: str  # what the README promises
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


D = "tests/distributed/"
MUTANTS = [
    Mutant(
        "resume-restarts", "exact resume: a rerun continues from the newest checkpoint",
        "pipeline/train/loop.py", "            self.cfg.resume,\n", '            "never",  # every run starts over\n',
        ("tests/train/test_loop.py::test_exact_resume_bit_identical",
         "tests/mlm/test_pretrain.py::test_exact_resume_and_export",
         "tests/finetune/test_finetune.py::test_resume_gives_identical_weights",
         "tests/train/test_faults.py::test_stop_signal_checkpoints_and_exits_75_then_resumes",
         "tests/train/test_faults.py::test_kill_9_while_a_checkpoint_is_written",
         "tests/train/test_faults.py::test_kill_9_at_random_moments_then_resume_is_bit_identical",
         D + "test_backends.py::test_resume_is_bit_identical", D + "test_kill_rank.py"),
    ),
    Mutant(
        "silent-fresh-start", "no silent restart when checkpoints exist and none loads",
        "pipeline/train/checkpoint.py", "    if failures:\n        raise PipelineError(",
        "    if False:\n        raise PipelineError(",
        ("tests/train/test_loop.py::test_no_silent_restart_when_no_checkpoint_loads",),
    ),
    Mutant(
        "keep-later-checkpoints", "resume=never: a later run's checkpoints do not outlive this run's first save",
        "pipeline/train/checkpoint.py", "            if other > step:", "            if False:",
        ("tests/train/test_loop.py::test_resume_never_replaces_a_later_run",),
    ),
    Mutant(
        "rng-not-restored", "exact resume restores the RNG of every process",
        "pipeline/train/elastic.py", "        torch.set_rng_state(states[\"torch_manual_seed\"])",
        "        torch.manual_seed(0)",
        ("tests/train/test_loop.py::test_exact_resume_bit_identical",),
    ),
    Mutant(
        "data-restarts-at-0", "the data position is the step: a resume seeks to it",
        "pipeline/train/loop.py", "micro_batch_stream(task.make_batch, start_step,",
        "micro_batch_stream(task.make_batch, 0,",
        ("tests/train/test_loop.py::test_exact_resume_bit_identical",),
    ),
    Mutant(
        "local-loss-normalisation", "the objective does not depend on how the batch is split",
        "pipeline/train/reductions.py", "    total = accelerator.reduce(flags, reduction=\"sum\")",
        "    total = flags * accelerator.num_processes",
        (D + "test_finetune_split.py",),
    ),
    Mutant(
        "micro-batch-normalisation", "grad_accum x batch b trains the same model as batch 2b",
        "pipeline/train/reductions.py", '    local = sum(int(mb["num_targets"]) for mb in micro_batches)',
        '    local = int(micro_batches[0]["num_targets"]) * len(micro_batches)  # as if all were like the first',
        ("tests/train/test_loop.py::test_grad_accum_equals_bigger_batch", D + "test_finetune_split.py"),
    ),
    Mutant(
        "masks-keyed-locally", "masks are keyed by each sequence's global stream position",
        "pipeline/mlm/data.py", "masker(reader.take(plan.samples(positions)), positions.astype(np.uint64))",
        "masker(reader.take(plan.samples(positions)), np.arange(len(positions), dtype=np.uint64))",
        (D + "test_backends.py::test_single_process_references_agree",
         D + "test_backends.py::test_loss_curve_matches_single_process"),
    ),
    Mutant(
        "fsdp-shim-removed", "FSDP2 really shards on CPU (never a silent DDP)",
        "pipeline/train/accel.py", "        state.distributed_type = DistributedType.MULTI_GPU", "        pass",
        (D + "test_backends.py::test_backend_is_what_the_launch_config_asks_for",),
    ),
    Mutant(
        "stop-flag-local", "a stop signal stops every process at the same step",
        "pipeline/train/reductions.py", "    return scale.float(), total[1]",
        "    return scale.float(), flags[1]",
        (D + "test_stop_signal.py",),
    ),
    Mutant(
        "sigusr1-ignored", "SIGUSR1 (Slurm's warning) checkpoints and exits 75",
        "pipeline/train/signals.py", "STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)", "STOP_SIGNALS = (signal.SIGTERM,)",
        ("tests/train/test_faults.py::test_stop_signal_checkpoints_and_exits_75_then_resumes",),
    ),
    Mutant(
        "checkpoint-in-place", "checkpoints are written to step_N.partial and renamed when complete",
        "pipeline/train/checkpoint.py", '        partial = self.root / f"step_{state.step}.partial"\n        main',
        "        partial = final\n        main",
        ("tests/train/test_faults.py::test_kill_9_while_a_checkpoint_is_written",),
    ),
    Mutant(
        "sizes-not-checked", "a checkpoint whose files do not match their recorded sizes is skipped by name",
        "pipeline/train/checkpoint.py", "        if file.stat().st_size != size:", "        if False:",
        ("tests/train/test_loop.py::test_partial_and_corrupt_checkpoints_are_skipped",),
    ),
    Mutant(
        "write-error-escapes", "disk full while writing: one error naming the checkpoint",
        "pipeline/train/checkpoint.py", "        if failed_anywhere(accelerator, error):\n            previous",
        "        if error is not None:\n            raise error\n        if failed_anywhere(accelerator, error):\n            previous",
        ("tests/train/test_faults.py::test_full_disk_while_writing_a_checkpoint",),
    ),
    Mutant(
        "no-space-check", "< 100 MiB free is refused before any training",
        "pipeline/train/runner.py", "MIN_FREE_BYTES = 100 * 2**20", "MIN_FREE_BYTES = 0",
        ("tests/train/test_faults.py::test_low_disk_space_is_refused_before_training",),
    ),
    Mutant(
        "no-write-probe", "an unwritable output_dir is refused before any training",
        "pipeline/train/runner.py", '            probe.write_bytes(b"ok")\n            probe.unlink()\n', "",
        ("tests/test_bad_input.py::test_unwritable_output_dir_is_refused",),
    ),
    Mutant(
        "fp16-overflow-caught", "fp16 overflow is the grad scaler's (not a fault)",
        "pipeline/train/loop.py", '        if self.acc.mixed_precision == "fp16":\n            return True\n', "",
        ("tests/train/test_faults.py::test_fp16_overflow_is_left_to_the_grad_scaler",),
    ),
    Mutant(
        "rng-unpickled-unsafely", "checkpoint pickles are read with weights_only=True",
        "pipeline/train/elastic.py", "    return load(file, map_location=\"cpu\")",
        "    return torch.load(file, map_location=\"cpu\", weights_only=False)",
        ("tests/test_security.py::test_resume_never_runs_code_from_a_checkpoint",),
    ),
    Mutant(
        "fsdp-to-plain-unsupported", "an FSDP2 checkpoint resumes without FSDP",
        "pipeline/train/elastic.py", '    elif saved.kind == "fsdp":\n        _load_dcp(', '    elif False:\n        _load_dcp(',
        (D + "test_elastic.py::test_fsdp_checkpoint_resumes_without_fsdp_and_back",),
    ),
    Mutant(
        "zero3-universal-slips-kept", "a ZeRO-3 checkpoint resumes on another process count exactly",
        "pipeline/train/elastic.py", "        _undo_zero3_universal_slips(base, groups)\n", "",
        (D + "test_elastic.py::test_resumes_with_another_process_count[zero3]",),
    ),
    Mutant(
        "zero-momentum-lost", "an elastic ZeRO resume restores the optimizer state, not only the weights",
        "pipeline/train/elastic.py", "        _undo_zero3_universal_slips(base, groups)\n",
        "        _undo_zero3_universal_slips(base, groups)\n"
        '        [s["exp_avg"].zero_() for s in base.state.values()]  # Adam momentum forgotten\n',
        (D + "test_elastic.py::test_resumes_with_another_process_count[zero2]",),
    ),
    Mutant(
        "fsdp-to-plain-optimizer-dropped", "an FSDP2 checkpoint resumed without FSDP brings its optimizer state",
        "pipeline/train/elastic.py",
        '        dcp_load({"optimizer": state}, storage_reader=FileSystemReader(path / FSDP_OPTIMIZER))\n', "",
        (D + "test_elastic.py::test_fsdp_checkpoint_resumes_without_fsdp_and_back",),
    ),
    Mutant(
        "tied-copies-exported", "final/ holds each tied weight once, as a single-process export does",
        "pipeline/train/checkpoint.py", "    return {k: v for k, v in weights.items() if not (k in tied and tied[k] in weights)}",
        "    return weights",
        (D + "test_backends.py::test_export_is_full_model_with_single_process_logits[fsdp2]",),
    ),
    Mutant(
        "warmup-off-by-one", "the learning-rate schedule is the stated function of the optimizer step",
        "pipeline/train/optim.py", "            return peak * (step + 1) / warm", "            return peak * step / warm",
        ("tests/train/test_loop.py::test_schedules",),
    ),
    Mutant(
        "grouping-per-process", "length-grouped batches are independent of the process count",
        "pipeline/train/batches.py", "head, self.global_batch, self.group_window, rng",
        "head, self.batch_size * self.grad_accum, self.group_window, rng",
        ("tests/train/test_batches.py::test_global_batch_does_not_depend_on_the_process_split[True]",),
    ),
    Mutant(
        "padded-vocab-predicted", "the sparse MLM head computes the dense HF loss (padded vocabulary rows never count)",
        "pipeline/mlm/models.py", "        logits = head(picked)[:, : self.vocab_size]", "        logits = head(picked)",
        ("tests/mlm/test_models.py::test_padded_vocab_rows_are_sliced_off",),
    ),
    Mutant(
        "shard-checksum-skipped", "a corrupted shard work unit is re-encoded on resume",
        "pipeline/shards/plan.py", '            if sha256_file(data) != info["sha256"]:', "            if False:",
        ("tests/shards/test_shards.py::test_corrupted_unit_is_re_encoded_on_resume",),
    ),
    Mutant(
        "whole-word-off", "whole-word masking predicts all sub-tokens of a word together",
        "pipeline/mlm/masking.py", "        starts = self._unit_starts(tokens, special)",
        "        starts = ~special",
        ("tests/mlm/test_masking.py::test_whole_word_groups_all_in_or_all_out",),
    ),
    Mutant(
        "iob1-not-converted", "IOB1 and IOB2 files give the same entities",
        "pipeline/finetune/conll.py", '            out[i] = "B-" + tags[i][2:]', "            pass",
        ("tests/finetune/test_conll.py::test_iob1_and_iob2_files_give_identical_spans",
         "tests/finetune/test_finetune.py::test_ner_iob1_and_iob2_train_identically"),
    ),
    Mutant(
        "bf16-loss-sum", "the bf16 fast path computes the loss of the fp32 step (within 2e-4)",
        "pipeline/mlm/models.py",
        '        loss_sum = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")',
        '        loss_sum = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")'
        ".bfloat16().sum().float()  # summed in bf16",
        ("tests/mlm/test_fast_path_numerics.py::test_bf16_autocast_loss_is_within_stated_tolerance_of_fp32_dense",),
    ),
    Mutant(
        "eval-mode-training", "every training step runs in training mode (dropout on), also for a from_pretrained model",
        "pipeline/train/loop.py", "        self.model.train()\n        check_prepared(accelerator, train)",
        "        check_prepared(accelerator, train)",
        ("tests/train/test_loop.py::test_every_training_step_runs_in_training_mode",),
    ),
    Mutant(
        "layer-lr-ignored", "train.layer_lr_decay gives each depth its decayed lr",
        "pipeline/train/optim.py", 'group["lr"] = lr * group.get("lr_scale", 1.0)', 'group["lr"] = lr',
        ("tests/train/test_optim.py",),
    ),
    Mutant(
        "summary-first-eval", "summary.json's last_eval is the final evaluation, not an earlier one",
        "pipeline/train/loop.py", 'self.last_metrics = {"step": self.state.step, **metrics}',
        'self.last_metrics = self.last_metrics or {"step": self.state.step, **metrics}',
        ("tests/train/test_loop.py::test_logging_outputs",),
    ),
]  # fmt: skip


def _scratch_copy() -> Path:
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    copy = Path(tempfile.mkdtemp(prefix="pipeline-mutant-"))
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    return copy


def run(mutant: Mutant) -> str:
    copy = _scratch_copy()
    try:
        target = copy / mutant.file
        text = target.read_text(encoding="utf-8")
        if text.count(mutant.old) != 1:
            return "stale"
        target.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(copy)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *mutant.tests]
        try:
            proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "hung"
        outcomes = re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", proc.stdout, re.M)
        passed = [test for outcome, test in outcomes if outcome == "PASSED"]
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
        if proc.returncode == 1:  # every named test should fail; list the ones that did not
            return f"killed ({summary})" + (f"; still passing: {', '.join(passed)}" if passed else "")
        return f"SURVIVED ({summary})" if proc.returncode == 0 else f"error {proc.returncode} ({summary})"
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def main(argv: list[str]) -> int:
    by_name = {m.name: m for m in MUTANTS}
    if not argv:
        for m in MUTANTS:
            print(f"{m.name:28s} {m.guarantee}\n{'':28s} {m.file}: {m.old.strip()!r} -> {m.new.strip()!r}")
        return 0
    chosen = MUTANTS if argv == ["all"] else [by_name[name] for name in argv]
    survived = 0
    for mutant in chosen:
        verdict = run(mutant)
        survived += not verdict.startswith(("killed", "hung"))
        print(f"{mutant.name:28s} {verdict}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
