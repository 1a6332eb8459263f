"""What the stages share: the output guard and lock, the log, torchrun's sync, resume checks, and the tail
of every training stage (fit → model.json → resumable state dropped → ranks synced), written once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compress.artifact import is_model_dir, read_meta, save_model_dir
from compress.errors import CompressError
from compress.labels import check_class_names
from compress.restart import restart_advice
from compress.training import Distill, FitOptions, Recipe, finish, fit, is_main_process


@dataclass(frozen=True)
class RunOptions:
    """How a stage runs: device (cuda when available), seed, resume an interrupted run, torch.compile (True,
    or a backend's name), progress output, and the training arithmetic (compress.precision: auto = bf16
    autocast on CUDA and fp32 elsewhere, bf16, fp32)."""

    device: str | None = None
    seed: int = 0
    resume: bool = True
    compile: bool | str = False
    progress: bool = True
    precision: str = "auto"

    def __post_init__(self):
        from compress.limits import check_seed
        from compress.precision import check_precision

        check_seed(self.seed, "the seed")  # before any work: 2**70 overflows torch's generator mid-run
        check_precision(self.precision)


def command_line() -> str:
    return " ".join(["compress", *sys.argv[1:]]) if sys.argv else "compress"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def as_json(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples become lists, other objects their str)."""
    return json.loads(json.dumps(obj, default=str))


def kept_stage(out: Path, settings: dict, run: "RunOptions", done_what: str) -> dict:
    """A finished stage kept on resume, refused when it was trained with other settings (a model.json
    that records none, from an older version, is kept)."""
    from compress.data.fingerprint import as_recorded

    meta = read_meta(out)
    done = (meta.get("training") or {}).get("settings")
    settings = as_recorded(as_json(settings), done) if done is not None else settings
    if done is not None and done != settings:
        diff = sorted(k for k in set(settings) | set(done) if done.get(k) != settings.get(k))
        raise CompressError(f"{out} holds a model trained with other settings ({', '.join(diff)}); "
                            f"{restart_advice()}")
    log(f"{out} is already {done_what}; keeping it")
    note_kept_precision(meta, run)
    return meta


def settings_tag(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def writing(out: str | Path, inputs=(), data=None):
    """Refuse an output that would overwrite an input (before any work), hold OUT's write lock so that a
    second writer gets one line naming this one, and turn SIGTERM/SIGHUP into exceptions so cleanup
    runs. `data` (DataOptions) adds the dataset's local files to the inputs. Under torchrun only rank 0
    writes, so only rank 0 locks."""
    from compress.atomic import signals_as_exceptions
    from compress.guard import check_outputs
    from compress.lock import output_lock

    named = [(label, Path(p)) for label, p in inputs if p is not None]
    source = data.source() if data is not None else None
    if source is not None:
        named.append(("--data", source))
    check_outputs(inputs=named, out_dirs=[("--out", Path(out))])
    if not is_main_process():
        yield
        return
    with signals_as_exceptions(), output_lock(out, command_line(), directory=True):
        _remove_leftovers(Path(out))
        try:
            yield
        except Exception as exc:
            line = _disk_write_failure(exc, out)
            if line is None:
                raise
            raise CompressError(f"{line} (free space and run it again: it goes on from its last saved stage or "
                                "epoch)") from None


def is_run_file(name: str) -> bool:
    """What the stages write into a folder they lock (a model directory, a run's summary and plots): a
    killed writer's temporaries of these names are removed when the next one takes the lock."""
    from compress.guard import MODEL_DIR_FILES

    return name in MODEL_DIR_FILES or name in ("best.safetensors", "summary.json", "summary.md") or name.endswith(".png")


def _remove_leftovers(out: Path) -> None:
    from compress.atomic import remove_leftovers
    from compress.train_state import STATE_DIR, is_state_file

    removed = remove_leftovers(out, is_run_file) + remove_leftovers(Path(out) / STATE_DIR, is_state_file)
    if removed:
        log(f"{out}: removed {len(removed)} temporary file(s) a stopped run left")


def _disk_write_failure(exc: BaseException, out) -> str | None:
    """One line for a checkpoint that could not be written (a full disk, a quota, a read-only folder), or
    None. Only the errors a write alone raises: a missing or unreadable input is not a failed write."""
    import errno

    from compress.errors import write_failure

    if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
        return None
    return write_failure(exc, out)


def save_model_into(out: Path, model, meta: dict, beside: dict[str, Any] | None = None) -> dict:
    """Write the model directory `out` (and the JSON files `beside`, e.g. plan.json) as one unit: all of it
    in a hidden scratch folder inside `out`, moved in (model.json last) only when complete. A full disk or
    a read-only folder is one line naming the file, and leaves no partial directory (no lone plan.json)."""
    from compress.atomic import move_into, scratch_dir, write_json
    from compress.errors import write_failure

    out, work = Path(out), None
    try:
        with scratch_dir(out / "model.json") as work:
            for name, obj in (beside or {}).items():
                write_json(work / name, obj)
            full = save_model_dir(model, work, meta)
            move_into(work, out)
        return full
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a failed write
        line = write_failure(exc, out)
        if line is None:
            raise
        raise CompressError(line.replace(str(work), str(out)) if work is not None else line) from None


def sync_and_read(out: Path) -> dict:
    """Under torchrun, other ranks wait for rank 0 to write the model directory, then read it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return read_meta(out)


def finished(out: Path, resume: bool, parent_sha: str | None = None) -> bool:
    """Whether OUT holds the finished stage to reuse on resume; one made from other parent weights is refused."""
    if not resume or not is_model_dir(out):
        return False
    if (out / "train_state").exists():
        # model.json is written last and removed before training starts, so with it present the stage
        # finished and was stopped before dropping its resumable state: drop it now.
        finish(out)
    if parent_sha is None:
        return True
    meta = read_meta(out)
    made_from = (meta.get("parent") or {}).get("sha256")
    if made_from == parent_sha:
        return True
    # Redoing it would replace a finished model without being asked: refuse, as for other settings.
    raise CompressError(f"{out} holds a model made from other weights than its parent has now; "
                        f"{restart_advice()}")


def note_kept_precision(meta: dict, run: RunOptions) -> None:
    """A finished stage kept on resume keeps the arithmetic it was trained in: say so when another was asked."""
    from compress.precision import resolved
    from compress.training import pick_device

    was = (meta.get("training") or {}).get("precision")
    asked = resolved(run.precision, pick_device(run.device))
    if was is not None and was != asked:
        log(f"kept as trained, in {was}: --precision {run.precision} ({asked}) applies only to a new run "
            "(--no-resume or another --out)")


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CompressError(f"output {out} exists and is not a directory")


# What a training run leaves beside its model: a stage that writes a model of its own into that folder would
# leave them describing a network that is no longer there.
RUN_FILES = ("metrics.jsonl", "best.safetensors", "train_state")


# What other commands leave beside a model: a pruning's plan, weight sharing's file and report.
MADE_FILES = ("plan.json", "model.dcz", "share_report.json", "share_report.md")


def check_no_training_run(out: Path, stage: str, also: tuple[str, ...] = ()) -> None:
    """Refuse an --out that holds a training run's files (or `also`'s), for a stage that writes no such files."""
    found = [name for name in (*RUN_FILES, *also) if (Path(out) / name).exists()]
    if found:
        kind = "a training run" if set(found) & set(RUN_FILES) else "another model's files"
        raise CompressError(f"{out} holds {kind} ({', '.join(found)}); {stage} would leave those files beside "
                            "a model they do not describe: choose a new folder")


def check_not_another_model(out: Path, stage: str, same_kind: str | None = None) -> None:
    """Refuse an --out that holds a model directory, unless its model.json records `same_kind` (this command's
    own earlier output, which a rerun replaces): writing there would replace a model the user has."""
    if not (Path(out) / "model.json").exists():
        return
    try:
        meta = read_meta(Path(out))
    except (CompressError, OSError, ValueError):
        meta = {}
    if same_kind is None or same_kind not in meta:
        raise CompressError(f"--out {out} holds another model (model.json); {stage} would replace it: choose a new "
                            "folder")


def check_classes(meta: dict, data) -> None:
    """The data's classes and image size are the model's, or labels and inputs would not line up."""
    if len(meta["classes"]) != len(data.classes):
        raise CompressError(f"model has {len(meta['classes'])} classes, data has {len(data.classes)}")
    check_class_names(list(meta["classes"]), list(data.classes))
    if tuple(meta["input_size"]) != data.input_size:
        raise CompressError(f"model expects {meta['input_size']} images, data has {list(data.input_size)}")


def wall_time(result: dict, t0: float) -> float:
    # A resumed run counts the epochs done before the interruption too.
    return round(sum(r.get("epoch_time_s", 0) for r in result["history"]), 1) or round(time.time() - t0, 1)


@dataclass
class Fitting:
    """One training stage's work: the model, its data, recipe, normalization, penalty and fit's labels."""

    model: Any  # nn.Module
    train: Any  # ImageData
    test: Any
    recipe: Recipe
    mean: list[float]
    std: list[float]
    sparsity: Any = 0.0
    desc: str = "train"
    settings: dict | None = None  # what the stage's resume identity is made of (its tag is their hash)
    distill: Distill | None = None


def fit_and_save(out: Path, job: Fitting, run: RunOptions, meta_for: Callable[[dict, float], dict]) -> dict:
    """The tail of every training stage: fit (resumable), then on rank 0 the model directory with
    `meta_for(fit's result, wall time)` as model.json, written last; the resumable state is dropped and
    the other ranks read what rank 0 wrote."""
    from compress.training import check_batch_norm_batches, images_per_rank

    # before model.json goes: a refused batch size must leave a finished directory as it was
    check_batch_norm_batches(job.model, images_per_rank(len(job.train)), job.recipe.batch_size)
    (out / "model.json").unlink(missing_ok=True)
    t0 = time.time()
    options = FitOptions(sparsity=job.sparsity, device=run.device, seed=run.seed, resume=run.resume, distill=job.distill,
                         compile=run.compile, progress=run.progress, desc=job.desc,
                         tag=settings_tag(job.settings) if job.settings is not None else None,
                         settings=as_json(job.settings) if job.settings is not None else None,
                         precision=run.precision)
    result = fit(job.model, job.train, job.test, out, job.recipe, mean=job.mean, std=job.std, options=options)
    if not is_main_process():
        return sync_and_read(out)
    meta = meta_for(result, wall_time(result, t0))
    meta.setdefault("training", {})["precision"] = result["precision"]
    job.model.cpu()
    saved = save_model_dir(job.model, out, meta)
    finish(out)
    sync_and_read(out)
    return saved


def sparsity_json(sparsity):
    """The sparsity setting as JSON: λ, or the regularizer's description (mode, budget, ...)."""
    if hasattr(sparsity, "describe"):
        return sparsity.describe()
    return float(sparsity or 0.0)


def sparsity_on(sparsity) -> bool:
    return hasattr(sparsity, "describe") or float(sparsity or 0.0) > 0


def sparsity_label(sparsity) -> str:
    if not hasattr(sparsity, "describe"):
        return f"λ={sparsity}"
    return sparsity_words(sparsity.describe())


def sparsity_words(d: dict, noun: str = "") -> str:
    """A SparsityConfig's description (describe(), as summary.json keeps it) in a few words."""
    amount = f"pull budget {d['budget']}" if "budget" in d else f"strength {d.get('strength')}"
    where = f", on the channels that pruning to {d.get('prepares', 'its request')} removes" if d.get("targeted") else ""
    return f"{d.get('mode')}{noun}, {amount}{where}"
