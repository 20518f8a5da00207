"""What a run records as it goes: train_log.jsonl every --log_every steps, and the same
scalars, every epoch's validation metrics and sample translations, and the resolved config
sent to the trackers of --report_to (TensorBoard, Weights & Biases, Trackio).

Only the process that writes files logs. --resume continues the same log and tracker run:
what was logged after the checkpoint it resumes from is dropped (train_log.jsonl is cut back,
TensorBoard purges those steps), so every step appears once.
"""
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from sonar_t5.common.errors import UserError
from sonar_t5.common.files import atomic_write
from sonar_t5.common.flag_views import FlagView

LOG_NAME = "train_log.jsonl"
TENSORBOARD_DIR = "tensorboard"
TRACKERS = ("none", "tensorboard", "wandb", "trackio")
WANDB_ID = "wandb_run_id"
TRACKIO_NAME = "trackio_run_name"
# what a run logs into its directory
RUN_LOGS = (LOG_NAME, TENSORBOARD_DIR, WANDB_ID, "wandb", TRACKIO_NAME)


def check_trackers(report_to):
    """Every tracker asked for is installed: else one line naming the pip command. Runs
    before any work."""
    for name in set(report_to) - {"none"}:
        try:
            importlib.import_module("torch.utils.tensorboard" if name == "tensorboard" else name)
        except ImportError:
            raise UserError(f"--report_to {name}: {name} is not installed", "command line",
                            f"pip install {name}, or drop it from --report_to") from None


@dataclass(frozen=True)
class TrackerSettings(FlagView):
    """Where a run logs, and whether it continues an earlier log."""
    output_dir: str
    report_to: list  # of TRACKERS
    resume: bool


class Tracker:
    """`tracker.log_step(...)`, `tracker.log_epoch(...)`, `tracker.close()`; does nothing on
    the processes that do not write files."""

    def __init__(self, settings, run_config, resume_step=None, enabled=True):
        """settings: TrackerSettings; resume_step: the step of the checkpoint a --resume
        continues from (None: a new run)."""
        self.enabled = enabled
        self.path = Path(settings.output_dir) / LOG_NAME
        self.backends = []
        if not enabled:
            return
        if resume_step is not None:
            cut_log_back(self.path, resume_step)
        wanted = [t for t in dict.fromkeys(settings.report_to) if t != "none"]
        hparams = flat_hparams(run_config)
        for name in wanted:
            self.backends.append(BACKENDS[name](settings, hparams, resume_step))

    def log_step(self, record):
        """record: step, epoch, loss, learning_rates {group: lr}, grad_norm, samples_per_s,
        nonfinite_steps."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {"train/loss": record["loss"], "train/grad_norm": record["grad_norm"],
                   "train/samples_per_s": record["samples_per_s"],
                   "train/nonfinite_steps": record["nonfinite_steps"]}
        scalars.update({f"train/lr/{g}": lr for g, lr in record["learning_rates"].items()})
        for backend in self.backends:
            backend.scalars(scalars, record["step"])

    def log_epoch(self, record):
        """One training_history.json record: its validation loss and metrics (every val_{name}
        as val/{name}), conditioning gap and sample translations."""
        if not self.enabled:
            return
        scalars = {f"val/{k[4:]}": v for k, v in record.items() if k.startswith("val_")}
        scalars["val/cond_gap"] = record["cond_gap"]
        scalars["train/epoch_loss"] = record["train_loss"]
        scalars["epoch"] = record["epoch"]
        pairs = [(s["reference"], s["translation"]) for s in record["samples"]]
        for backend in self.backends:
            backend.scalars({k: v for k, v in scalars.items() if v is not None},
                            record["step"])
            backend.samples("val/samples", pairs, record["step"])

    def close(self):
        for backend in self.backends:
            backend.close()


def cut_log_back(path, step):
    """Keep the lines of steps up to `step`: those after it are logged again by the resumed
    run. A line that is not a whole record (half-written when the run was killed or the disk
    filled) goes too, with a note. -> the number of such lines."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = [(line, _step_of(line)) for line in lines]
    kept = [line for line, s in records if s is not None and s <= step]
    broken = sum(s is None for _, s in records)
    if len(kept) != len(lines):
        atomic_write(path, lambda f: f.write("".join(line + "\n" for line in kept)),
                     binary=False)
    if broken:
        print(f"note: dropped {broken} unreadable line{'s' * (broken > 1)} of {path} (a run "
              "killed mid-write)")
    return broken


def _step_of(line):
    """A train_log.jsonl line's step, or None for a line that is not a whole record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


def flat_hparams(run_config):
    """The resolved config as flat name -> number/string/bool ("settings.learning_rate": 1e-4),
    what trackers show as a run's hyper-parameters."""
    flat = {}

    def walk(name, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{name}.{k}", v)
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)

    for section in ("args", "model_config", "parameters", "data"):
        walk(section, run_config.get(section, {}))
    return flat


class TensorBoard:
    """PyTorch's own SummaryWriter, into RUN/tensorboard (tensorboard --logdir RUN)."""

    def __init__(self, settings, hparams, resume_step):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summary
        # purge_step: events at or after it, from before the resume, are hidden by readers
        self.writer = SummaryWriter(Path(settings.output_dir) / TENSORBOARD_DIR,
                                    purge_step=None if resume_step is None else resume_step + 1)
        if resume_step is None:  # the hyper-parameters, in this run's own event file
            for summary in hparams_summary(hparams, {"val/bleu": 0.0}):
                self.writer.file_writer.add_summary(summary)

    def scalars(self, values, step):
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def samples(self, name, pairs, step):
        """A Markdown table, as TensorBoard's text tab renders it."""
        rows = ["| reference | translation |", "|---|---|"]
        rows += [f"| {ref} | {hyp} |" for ref, hyp in pairs]
        self.writer.add_text(name, "\n".join(rows), step)

    def close(self):
        self.writer.close()


def run_identity(settings, name, make):
    """The tracker's id for this run, kept in RUN/name so that --resume continues the same
    tracker run (a new run gets a new one: two run directories with one name stay apart)."""
    path = Path(settings.output_dir) / name
    if settings.resume and path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    identity = make()
    atomic_write(path, lambda f: f.write(identity + "\n"), binary=False)
    return identity


class WandB:
    """Weights & Biases (WANDB_MODE=offline works without a network: `wandb sync` uploads
    later). The run's id is kept in RUN/wandb_run_id; --resume continues that run. Its files
    go in RUN/wandb/."""

    def __init__(self, settings, hparams, resume_step):
        import wandb
        self.wandb = wandb
        run_id = run_identity(settings, WANDB_ID, lambda: os.urandom(4).hex())
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sonar-t5"),
                              name=Path(settings.output_dir).name, id=run_id, resume="allow",
                              config=hparams, dir=settings.output_dir)

    def scalars(self, values, step):
        self.run.log(values, step=step)

    def samples(self, name, pairs, step):
        table = self.wandb.Table(columns=["reference", "translation"], data=list(map(list, pairs)))
        self.run.log({name: table}, step=step)

    def close(self):
        self.run.finish()


class Trackio:
    """Hugging Face's Trackio: a local database ($TRACKIO_DIR, else ~/.cache/huggingface/
    trackio; `trackio show` opens the dashboard). The run is named after the run directory
    plus a suffix, kept in RUN/trackio_run_name; --resume continues that run."""

    def __init__(self, settings, hparams, resume_step):
        import trackio
        self.trackio = trackio
        name = run_identity(settings, TRACKIO_NAME,
                            lambda: f"{Path(settings.output_dir).name}-{os.urandom(3).hex()}")
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", "sonar-t5"), name=name,
                     config=hparams, resume="allow" if settings.resume else "never")

    def scalars(self, values, step):
        self.trackio.log(values, step=step)

    def samples(self, name, pairs, step):
        table = self.trackio.Table(columns=["reference", "translation"],
                                   data=list(map(list, pairs)))
        self.trackio.log({name: table}, step=step)

    def close(self):
        self.trackio.finish()


BACKENDS = {"tensorboard": TensorBoard, "wandb": WandB, "trackio": Trackio}
