"""Do the tests catch the bugs they are there for? Plausible bugs ("mutants") applied to a copy of
the package, each checked against the tests that claim to guard that behaviour.

    python benchmarks/mutants.py              # every mutant in turn (~15 min, 2 CPU cores)
    python benchmarks/mutants.py --list       # names, files and the tests each names
    python benchmarks/mutants.py --only NAME  # one mutant (updates its row of the results)
    python benchmarks/mutants.py --baseline   # the named tests pass on the unchanged copy
    python benchmarks/mutants.py --markdown   # print the docs/reliability.md section

Each mutant is one exact text substitution in one file of src/natlearn. src/natlearn is copied to a
temporary folder, the substitution applied there (a mutant whose old text is not found exactly once
"did not apply": it fails, so this list cannot silently go stale as the code changes), and `python
-m pytest -q -x TESTS` runs with PYTHONPATH naming the copy first; subprocesses the tests start
(natlearn train, torchrun) inherit it. A pytest plugin records which natlearn the run imported, and
a result counts only when that is the copy. Caught = pytest exited 1 (a test failed); an error, an
empty collection or a timeout is reported as such, never as caught. Writes
benchmarks/results/mutants.json; prints a markdown table. The repository's files are never changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# benchmarks/ is on sys.path when run as a script
from _report import ROOT, hardware, today, write_json
from natlearn.markdown import table

PACKAGE = ROOT / "src" / "natlearn"
RESULTS = ROOT / "benchmarks" / "results" / "mutants.json"

TRAIN = "tests/test_train.py"
FAULTS = "tests/reliability/test_faults.py"
RESUME = f"{TRAIN}::test_resume_from_a_mid_run_checkpoint_matches_an_uninterrupted_run"
KILL_RESUME = f"{FAULTS}::test_sigkill_mid_epoch_resumes_from_the_step_checkpoint"
RESUMED_TARGETS = f"{FAULTS}::test_resumed_targets_equal_the_ones_before_the_kill"
DDP_STEP = (
    "tests/test_distributed.py::"
    "test_two_ranks_take_the_one_process_step_for_every_loss_and_reduction"
)

HONEST = "tests/test_honest_eval.py"
NONFINITE = "tests/reliability/test_nonfinite.py"
PINNED = "tests/test_pinned_behaviours.py"
MID_EPOCH_RESUME = f"{PINNED}::test_a_mid_epoch_resume_trains_the_uninterrupted_batches_and_crops"
HELD_OUT = f"{PINNED}::test_the_linear_probes_held_out_score_is_on_images_its_fit_never_saw"
STANDARDISED = f"{PINNED}::test_a_probe_standardises_by_the_training_features_alone"


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what a developer would have written, in words
    file: str  # relative to src/natlearn
    old: str  # exact text, found exactly once
    new: str
    tests: tuple[str, ...]  # pytest ids that must catch it


STEP = (
    "tests/test_step.py::"
    "test_a_reassigning_step_takes_the_loss_to_the_targets_held_after_the_reassignment"
)
DDP_KILL = (
    "tests/test_distributed.py::"
    "test_kill_and_resume_under_two_ranks_ends_where_an_uninterrupted_run_ends"
)

MUTANTS = [
    Mutant(
        "loss-on-stale-targets",
        "the step takes the loss before the batch's re-assignment, to the targets it held before",
        "training/trainer.py",
        "    if run.objective.reassigns(epoch):\n"
        "        stats = _reassign(run, ids, outputs.detach(), rows)\n"
        "    loss, loss_stats = run.objective.loss(ids, outputs, rows)\n",
        "    loss, loss_stats = run.objective.loss(ids, outputs, rows)\n"
        "    if run.objective.reassigns(epoch):\n"
        "        stats = _reassign(run, ids, outputs.detach(), rows)\n",
        (STEP,),
    ),
    Mutant(
        "reassign-among-all-targets",
        "the batch's images choose among every target, not only the ones the batch holds",
        "nat/assignment.py",
        "candidates = torch.cat([current, self.spare[spare_slots]]) if m else current",
        "candidates = torch.cat([current, self.spare[spare_slots]]) if m else torch.arange(self.k)",
        (
            "tests/test_assignment.py::test_batch_reassignment_equals_brute_force",
            "tests/test_assignment.py::test_assignment_stays_a_permutation",
        ),
    ),
    Mutant(
        "spares-from-other-images",
        "the spare candidates are drawn from targets other images hold, not from the unassigned "
        "ones",
        "nat/assignment.py",
        "candidates = torch.cat([current, self.spare[spare_slots]]) if m else current",
        "candidates = torch.cat([current, self.image_to_target[spare_slots]]) if m else current",
        (
            ""
            "tests/test_assignment.py::test_rectangular_reassignment_with_spares_equals_brute_force",
            "tests/test_assignment.py::test_assignment_stays_a_permutation",
        ),
    ),
    Mutant(
        "demo-scores-untrained-net",
        "the demo's nat row probes a freshly built (untrained) network instead of the trained one",
        "demo.py",
        '"nat": _network_features(nat_run.model,',
        '"nat": _network_features(initial_model(config, train_set),',
        ("tests/test_demo.py::test_demo_writes_measured_results_and_figures",),
    ),
    Mutant(
        "extraction-in-train-mode",
        "feature extraction leaves the network in train mode (BatchNorm on batch statistics, "
        "running stats moved)",
        "evaluate/features.py",
        "    model.eval()\n",
        "",
        (
            ""
            "tests/test_evaluate.py::test_an_images_features_do_not_depend_on_its_batch_and_extraction_"
            "leaves_batchnorm_alone",
        ),
    ),
    Mutant(
        "optimizer-state-not-saved",
        "checkpoints hold the optimizer's settings but not its momentum buffers",
        "training/run.py",
        '"optimizer": self.optimizer.state_dict(),',
        '"optimizer": {**self.optimizer.state_dict(), "state": {}},',
        (RESUME, KILL_RESUME),
    ),
    Mutant(
        "optimizer-state-not-restored",
        "a resume restores the weights and the assignment but restarts the optimizer (momentum "
        "lost)",
        "training/run.py",
        '        self.optimizer.load_state_dict(state["optimizer"])\n',
        "",
        (RESUME, KILL_RESUME),
    ),
    Mutant(
        "targets-seeded-per-process",
        "the targets' seed is mixed with the process id, so a resumed process trains towards other "
        "targets",
        "nat/objective.py",
        "NoiseTargets(k, dim, seed=seed, kind=targets",
        'NoiseTargets(k, dim, seed=seed + __import__("os").getpid(), kind=targets',
        (RESUMED_TARGETS,),
    ),
    Mutant(
        "targets-seeded-per-rank",
        "the targets' seed is mixed with the rank, so the ranks of one run hold different targets",
        "nat/objective.py",
        "NoiseTargets(k, dim, seed=seed, kind=targets",
        "NoiseTargets(k, dim, seed=seed + self.ranks.rank, kind=targets",
        ("tests/test_distributed.py::test_two_ranks_train_like_one_process_with_the_global_batch",),
    ),
    Mutant(
        "sum-scaled-per-rank",
        "each rank reduces its own rows (sum, or mean over its share): DDP's average then trains "
        "at lr / N (sum)",
        "nat/objective.py",
        '    scale = ranks.world_size / (global_batch if reduction == "mean" else 1)\n'
        "    return per_row.sum() * scale\n",
        '    return per_row.sum() if reduction == "sum" else per_row.mean()\n',
        (f"{DDP_STEP}[nat-square-sum]", f"{DDP_STEP}[supervised-ce-sum]"),
    ),
    Mutant(
        "softmax-over-the-ranks-own-targets",
        "under torchrun the NAT softmax loss scores each image against its rank's targets only, "
        "not the global "
        "batch's",
        "nat/objective.py",
        "            batch_targets = self._held(self.ranks.gather(ids.to(outputs.device)), "
        "outputs.device)\n"
        "            mine = torch.arange(first, first + len(ids), device=outputs.device)\n",
        "            batch_targets = self._held(ids, outputs.device)\n"
        "            mine = torch.arange(len(ids), device=outputs.device)\n",
        (f"{DDP_STEP}[nat-softmax-sum-no-reassign]",),
    ),
    Mutant(
        "every-rank-solves",
        "every rank solves the gathered batch's assignment itself (identity then rests on "
        "bit-identical arithmetic)",
        "nat/assignment.py",
        "    if ranks.main:\n        results = [",
        "    if True:\n        results = [",
        ("tests/test_distributed.py::test_two_rank_scenarios[one_rank_solves]",),
    ),
    Mutant(
        "private-batchnorm-per-rank",
        "each rank normalises with its own share's BatchNorm statistics instead of the global "
        "batch's",
        "training/distributed.py",
        "    if ranks.world_size == 1:\n        return model\n",
        "    if True:\n        return model\n",
        (f"{DDP_STEP}[nat-softmax-mean]",),
    ),
    Mutant(
        "dropped-image-shifts-rank-rows",
        "under torchrun a rank that drops an unreadable streamed image still assumes the planned "
        "share of the "
        "global batch",
        "training/trainer.py",
        "    if not may_drop:\n",
        "    if True:\n",
        ("tests/test_distributed.py::test_two_ranks_stream_a_folder_and_skip_an_unreadable_image",),
    ),
    Mutant(
        "mid-epoch-statistics-of-rank-0-only",
        "a mid-epoch checkpoint saves rank 0's own statistic sums, not their sum over ranks (the "
        "resumed epoch logs other losses)",
        "training/trainer.py",
        "    state.sums = sums.over_ranks(run.ranks)\n",
        "    state.sums = dict(zip(sums.names, sums.totals.tolist(), strict=True))\n",
        (DDP_KILL,),
    ),
    Mutant(
        "folder-scored-on-its-training-images",
        "a class folder without train/ and test/ serves every image as both splits (probes scored "
        "on their own "
        "training images)",
        "data/splits.py",
        '    if split == "all":\n        return FolderSplit(listing, listing, "held-out")\n',
        '    if True:\n        return FolderSplit(listing, listing, "held-out")\n',
        (f"{HONEST}::test_a_plain_class_folder_is_scored_on_held_out_images_near_chance",),
    ),
    Mutant(
        "decay-chosen-on-test-labels",
        "the linear probe refits each weight decay and keeps the one with the best test accuracy",
        "evaluate/probes/linear.py",
        "    with torch.no_grad():\n        test_scores = torch.cat(\n",
        "    fits = [\n"
        "        _choose_and_fit(x, y, classes, [wd], solver, epochs, batch_size, lr, "
        "progress)[0]\n"
        "        for wd in weight_decays\n"
        "    ]\n"
        "    tests = [\n"
        "        float((f(standardise(test_x).to(device)).argmax(1).cpu() == "
        "test_y).double().mean())\n"
        "        for f in fits\n"
        "    ]\n"
        "    best = max(range(len(tests)), key=tests.__getitem__)\n"
        "    final = fits[best]\n"
        "    with torch.no_grad():\n        test_scores = torch.cat(\n",
        (f"{HONEST}::test_permuting_the_test_labels_changes_no_choice_of_the_linear_probe",),
    ),
    Mutant(
        "layer-chosen-on-test-labels",
        "the best layer of an evaluation (headline, gap fractions) is the one with the best test "
        "accuracy",
        "evaluate/reports/compare.py",
        'layer = max(table, key=lambda name: table[name]["held_out_top1"])',
        'layer = max(table, key=lambda name: table[name]["top1"])',
        (
            f"{HONEST}::test_best_linear_picks_the_held_out_best_layer_not_the_test_best",
            "tests/test_evaluate.py::test_gap_recovered_arithmetic",
        ),
    ),
    Mutant(
        "demo-layer-chosen-on-test-labels",
        "the demo's best-layer column picks the layer with the best test accuracy (its probes' "
        "test top-1 handed to the layer choice as their held-out score)",
        "demo.py",
        "{name: probe.as_dict() for name, probe in probes.items()}",
        '{name: {**probe.as_dict(), "held_out_top1": probe.top1} '
        "for name, probe in probes.items()}",
        (f"{HONEST}::test_the_demo_picks_its_best_layer_on_held_out_train_images",),
    ),
    Mutant(
        "mlp-probe-too-few-steps",
        "the MLP probe trains with the full batch size even on a train split smaller than a batch "
        "(no steps)",
        "evaluate/probes/mlp.py",
        "    batch_size = max(2, min(batch_size, len(x) // 4))\n",
        "",
        (f"{HONEST}::test_the_mlp_probe_learns_an_easy_task_with_fewer_images_than_its_batch",),
    ),
    Mutant(
        "skipped-batch-left-in-batchnorm",
        "on_nonfinite=skip skips the step but keeps the NaN batch's statistics in BatchNorm's "
        "running buffers",
        "training/trainer.py",
        "        buffer.copy_(saved)\n",
        "        pass\n",
        (f"{FAULTS}::test_nonfinite_batch_stops_or_is_skipped",),
    ),
    Mutant(
        "gradients-unchecked",
        "non-finite gradients reach optimizer.step() (only outputs and loss are checked)",
        "training/trainer.py",
        '    check_finite("gradients", largest_gradient(run.model))\n',
        "",
        (f"{NONFINITE}::test_nonfinite_gradients_stop_the_run_before_the_step",),
    ),
    Mutant(
        "batchnorm-statistics-unchecked",
        "the epoch-end check covers the parameters but not BatchNorm's running statistics",
        "training/nonfinite.py",
        "    tensors = [*model.parameters(), *(b for b in model.buffers() if "
        "b.is_floating_point())]\n",
        "    tensors = [*model.parameters()]\n",
        (f"{NONFINITE}::test_nan_batchnorm_statistics_stop_the_run",),
    ),
    Mutant(
        "assignment-not-restored",
        "a resume restores the weights and optimizer but starts from the initial image -> target "
        "assignment",
        "training/run.py",
        '        self.objective.load_state_dict(state["objective"])\n',
        "",
        (RESUME, RESUMED_TARGETS),
    ),
    Mutant(
        "spare-targets-dropped",
        "the objective is built without the config's spare_targets: every run trains with no spare "
        "targets whatever it was given",
        "nat/objective.py",
        "            spare_targets=config.spare_targets,\n",
        "",
        (f"{PINNED}::test_spare_targets_set_in_the_config_take_part_in_the_runs_reassignments",),
    ),
    Mutant(
        "finetuned-net-scored-in-train-mode",
        "fine-tuning hands its network back in train mode: test images are scored with BatchNorm "
        "on the statistics of the chunk they land in",
        "evaluate/fit.py",
        "    return tuned.eval()\n",
        "    return tuned\n",
        (f"{PINNED}::test_a_finetuned_network_scores_each_test_image_independently_of_its_batch",),
    ),
    Mutant(
        "knn-votes-near-uniform",
        "k-NN neighbours vote with weight exp(similarity * temperature), all near 1, instead of "
        "exp(similarity / temperature)",
        "evaluate/probes/knn.py",
        "(similarity / temperature).exp()",
        "(similarity * temperature).exp()",
        (f"{PINNED}::test_knn_votes_weigh_each_neighbour_by_exp_of_similarity_over_temperature",),
    ),
    Mutant(
        "test-features-standardised-by-their-own-statistics",
        "the linear probe standardises the test features by their own mean and std (a scaler fit "
        "again on the test split) instead of the training features'",
        "evaluate/probes/linear.py",
        "[final(standardise(chunk).to(device)).cpu() for chunk in test_x.split(4096)]",
        "[final(standardiser(test_x)(chunk).to(device)).cpu() for chunk in test_x.split(4096)]",
        (f"{STANDARDISED}[linear]",),
    ),
    Mutant(
        "mlp-standardised-with-test-features",
        "the MLP probe standardises by the mean and std of the train and test features together",
        "evaluate/probes/mlp.py",
        "    standardise = standardiser(train_x)\n",
        "    standardise = standardiser(torch.cat([train_x, test_x]))\n",
        (f"{STANDARDISED}[mlp]",),
    ),
    Mutant(
        "reuse-key-blind-to-the-test-split",
        "the reuse key digests the train split twice: an evaluation stored for another test split "
        "is reused",
        "evaluate/reuse.py",
        '"test_data": data_digest(test_set),',
        '"test_data": data_digest(train_set),',
        (f"{PINNED}::test_the_reuse_key_changes_when_only_the_test_split_changes",),
    ),
    Mutant(
        "mid-epoch-resume-reshuffles",
        "a mid-epoch resume restores the epoch's generator before drawing its batch order: the "
        "rest of the epoch trains other batches",
        "training/trainer.py",
        "    batch_ids = torch.tensor_split(torch.randperm(len(run.data), generator=generator), "
        "num_batches)\n"
        "    if state.generator is not None:  # continuing this epoch mid-way\n"
        "        generator.set_state(state.generator)\n",
        "    if state.generator is not None:  # continuing this epoch mid-way\n"
        "        generator.set_state(state.generator)\n"
        "    batch_ids = torch.tensor_split(torch.randperm(len(run.data), generator=generator), "
        "num_batches)\n",
        (MID_EPOCH_RESUME,),
    ),
    Mutant(
        "mid-epoch-crops-not-saved",
        "a mid-epoch checkpoint does not save the epoch's generator: the resumed steps draw other "
        "crops and flips",
        "training/trainer.py",
        "state.seconds, state.generator = time.perf_counter() - started, generator.get_state()",
        "state.seconds, state.generator = time.perf_counter() - started, None",
        (MID_EPOCH_RESUME,),
    ),
    Mutant(
        "cv-fold-inside-its-own-fit",
        "the L-BFGS probe's cross-validation fits each fold's model on every training image, the "
        "held-out fold included",
        "evaluate/probes/linear.py",
        "fit = torch.cat([f for j, f in enumerate(folds) if j != k])",
        "fit = torch.cat([f for j, f in enumerate(folds)])",
        (f"{HELD_OUT}[lbfgs]",),
    ),
    Mutant(
        "adam-held-out-inside-the-fit",
        "the Adam probe trains on every training image, the 10% it chooses the weight decay on "
        "included",
        "evaluate/probes/linear.py",
        "    return order[cut:], order[:cut]\n",
        "    return order, order[:cut]\n",
        (f"{HELD_OUT}[adam]",),
    ),
    Mutant(
        "voc-refit-with-the-last-decay-tried",
        "the VOC linear probe reports the decay val chose but refits on trainval with the last "
        "decay its search tried",
        "evaluate/voc/classification.py",
        'targets["val"]]), decays[best])',
        'targets["val"]]), decays[i])',
        (f"{PINNED}::test_the_voc_linear_probe_refits_on_trainval_with_the_decay_val_chose",),
    ),
    Mutant(
        "evolution-rows-numbered-by-position",
        "evolution labels its rows 0, 1, 2, ... instead of the epochs of the checkpoints they "
        "evaluate",
        "evaluate/reports/evolution.py",
        '        epoch = state["epoch"] if state is not None else 0\n',
        "        epoch = index\n",
        (f"{PINNED}::test_each_evolution_row_evaluates_the_checkpoint_of_its_epoch",),
    ),
    Mutant(
        "fisher-without-power-normalisation",
        "the Fisher vectors skip the signed square root before the L2 norm",
        "evaluate/probes/fisher.py",
        "F.normalize(f.sign() * f.abs().sqrt(), dim=1)",
        "F.normalize(f, dim=1)",
        (
            "tests/test_fisher.py::test_the_encoding_is_the_fisher_vector_of_the_explicit_descriptors",
        ),
    ),
    Mutant(
        "handcrafted-whitening-fit-on-test-windows",
        "the hand-crafted whitening is fit on windows of the images it encodes last (the test "
        "split), not on training windows",
        "evaluate/probes/handcrafted.py",
        "    encoder = fit_encoder(train, crop_size, crop, scale, device, workers, **settings)\n",
        "    encoder = fit_encoder(test, crop_size, crop, scale, device, workers, **settings)\n",
        (
            "tests/test_handcrafted.py::"
            "test_normalisation_whitening_and_centres_see_train_images_only",
        ),
    ),
]

# Loaded into every pytest run (-p): records the natlearn the tests import, before any test runs.
GUARD = """
import os


def pytest_sessionstart(session):
    import natlearn

    with open(os.environ["NATLEARN_MUTANT_GUARD"], "w") as record:
        record.write(os.path.realpath(natlearn.__file__))
"""


def _copy_package(folder: Path) -> Path:
    copy = folder / "natlearn"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (folder / "_natlearn_mutant_guard.py").write_text(GUARD)
    return copy


def _apply(copy: Path, mutant: Mutant) -> str | None:
    """Apply the substitution in the copy; None when applied, else why not."""
    path = copy / mutant.file
    if not path.is_file():
        return f"src/natlearn/{mutant.file} does not exist"
    text = path.read_text()
    found = text.count(mutant.old)
    if found != 1:
        return f"the old text occurs {found} times in src/natlearn/{mutant.file} (needs exactly 1)"
    path.write_text(text.replace(mutant.old, mutant.new))
    return None


def _pytest(folder: Path, tests: tuple[str, ...], timeout: float) -> dict:
    """Run the tests against the copy in ``folder``; returns returncode, seconds, which natlearn was
    imported, output tail."""
    guard = folder / "imported.txt"
    guard.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "NATLEARN_MUTANT_GUARD": str(guard),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "-p",
        "_natlearn_mutant_guard",
        *tests,
    ]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(
            process.pid, signal.SIGKILL
        )  # pytest and every process it started (train runs, torchrun ranks)
        output, _ = process.communicate()
        returncode = None
    imported = guard.read_text() if guard.is_file() else None
    return {
        "returncode": returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "imported": imported,
        "output": output[-3000:],
    }


def run_mutant(mutant: Mutant | None, tests: tuple[str, ...], timeout: float) -> dict:
    """One mutant (None: the unchanged copy) against ``tests``; the result row."""
    name = mutant.name if mutant else "baseline"
    row = {
        "name": name,
        "tests": list(tests),
        "command": f"python benchmarks/mutants.py --only {name}",
    }
    if mutant:
        row |= {"bug": mutant.bug, "file": f"src/natlearn/{mutant.file}"}
    with tempfile.TemporaryDirectory(prefix="natlearn-mutant-") as tmp:
        copy = _copy_package(Path(tmp))
        problem = _apply(copy, mutant) if mutant else None
        if problem:
            return row | {"status": "did not apply", "detail": problem, "seconds": 0.0}
        ran = _pytest(Path(tmp), tests, timeout)
        expected = os.path.realpath(copy / "__init__.py")
        row |= {"seconds": ran["seconds"], "returncode": ran["returncode"]}
        if ran["imported"] != expected:
            detail = f"the tests imported {ran['imported']}, not the copy {expected}"
            return row | {"status": "not verified", "detail": detail, "output": ran["output"]}
        if ran["returncode"] is None:
            return row | {
                "status": "timed out",
                "detail": f"no result within {timeout:.0f} s",
                "output": ran["output"],
            }
        outcomes = {0: "not caught", 1: "caught"} if mutant else {0: "passed", 1: "FAILED"}
        status = outcomes.get(ran["returncode"], f"error (pytest exit {ran['returncode']})")
        summary = [
            line for line in ran["output"].splitlines() if line.startswith(("FAILED", "ERROR"))
        ] or ran["output"].strip().splitlines()[-1:]
        return row | {
            "status": status,
            "detail": "; ".join(summary)[:600],
            "output": ran["output"] if status not in ("caught", "passed") else "",
        }


def results_table(rows: list[dict]) -> str:
    cells = []
    for row in rows:
        tests = "<br>".join(f"`{test.replace('tests/', '', 1)}`" for test in row["tests"])
        where = f"`{row['name']}` ({row.get('file', 'no change')})"
        bug = row.get("bug", "the unchanged code")
        cells.append([where, bug, tests, row["status"], f"{row['seconds']:.0f}"])
    header = ["mutant", "bug", "tests that must catch it", "result", "seconds"]
    return table(header, cells)


def section(payload: dict) -> str:
    rows = payload["results"]
    caught = sum(row["status"] == "caught" for row in rows if row["name"] != "baseline")
    mutants = sum(row["name"] != "baseline" for row in rows)
    return "\n".join(
        [
            "## Mutants: do the tests catch the bugs they guard against?",
            "",
            f"Written by `python benchmarks/mutants.py` on {payload['date']} "
            f"({payload['hardware']}): {caught} of {mutants} mutants caught.",
            "Each mutant is one plausible bug, applied as an exact text substitution to a copy of "
            "`src/natlearn`; only the",
            "tests named for it run (`pytest -x`, with the copy first on PYTHONPATH, checked by a "
            "plugin that records which",
            "natlearn was imported). Caught = one of those tests failed. A substitution that no "
            "longer matches the code",
            'reports "did not apply" and counts as a failure. Rerun one row with '
            "`python benchmarks/mutants.py --only NAME`.",
            "",
            results_table(rows),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run this mutant only (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run the named tests on the unchanged copy (they must pass)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds allowed to each mutant's pytest run (default 900)",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the docs/reliability.md section from the saved results; run nothing",
    )
    args = parser.parse_args()
    by_name = {mutant.name: mutant for mutant in MUTANTS}
    if args.list:
        for mutant in MUTANTS:
            print(f"{mutant.name}: {mutant.bug} [src/natlearn/{mutant.file}]")
            for test in mutant.tests:
                print(f"    {test}")
        return 0
    if args.markdown:
        if not RESULTS.is_file():
            raise SystemExit(
                f"error: no {RESULTS.relative_to(ROOT)} yet; run python benchmarks/mutants.py first"
            )
        print(section(json.loads(RESULTS.read_text())))
        return 0
    unknown = [name for name in args.only if name not in by_name]
    if unknown:
        raise SystemExit(f"error: unknown mutant(s) {', '.join(unknown)}; --list shows them")
    chosen = [by_name[name] for name in args.only] if args.only else MUTANTS
    rows = []
    if args.baseline:
        everything = tuple(dict.fromkeys(test for mutant in chosen for test in mutant.tests))
        print(f"baseline: {len(everything)} tests on the unchanged copy ...", flush=True)
        rows.append(run_mutant(None, everything, args.timeout))
        print(
            f"  {rows[-1]['status']} in {rows[-1]['seconds']:.0f} s: {rows[-1].get('detail', '')}",
            flush=True,
        )
    for mutant in chosen:
        print(f"{mutant.name} ...", flush=True)
        rows.append(run_mutant(mutant, mutant.tests, args.timeout))
        print(
            f"  {rows[-1]['status']} in {rows[-1]['seconds']:.0f} s: {rows[-1].get('detail', '')}",
            flush=True,
        )
    # Keep the saved rows of mutants not run now (an --only rerun updates its own row), in MUTANTS
    # order.
    saved = (
        {row["name"]: row for row in json.loads(RESULTS.read_text())["results"]}
        if RESULTS.is_file()
        else {}
    )
    saved = {
        name: row
        for name, row in saved.items()
        if name in by_name or (name == "baseline" and not args.baseline)
    }
    saved.update({row["name"]: row for row in rows})
    order = ["baseline", *by_name]
    results = [saved[name] for name in order if name in saved]
    write_json("mutants", {"date": today(), "hardware": hardware(), "results": results})
    print()
    print(results_table(rows))
    failed = [row for row in rows if row["status"] not in ("caught", "passed")]
    for row in failed:
        print(
            f"\n{row['name']}: {row['status']}: {row.get('detail', '')}\n{row.get('output', '')}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
