"""SageMaker's `train` command: the `gpu_jobs` image run as a training job (`docker run <image> train`).

    python -m gpu_jobs.serve train                       # what the container's entrypoint runs for SageMaker
    python -m gpu_jobs.training.sagemaker_train          # the same, directly
    SM_CHANNEL_TRAIN=DS SM_MODEL_DIR=OUT SM_CHECKPOINT_DIR=CK SM_OUTPUT_DATA_DIR=O/data \\
        python -m gpu_jobs.training.sagemaker_train --hyperparameters hp.json   # on local folders (tests)

SageMaker's layout, each root overridable by a flag, then an environment variable (the names its training
toolkit sets), then the default:

    hyperparameters  --hyperparameters  $SM_INPUT_CONFIG_DIR/hyperparameters.json  /opt/ml/input/config/...
    dataset folder   --train            $SM_CHANNEL_TRAIN      /opt/ml/input/data/train   (the "train" channel)
    adapter outputs  --model-dir        $SM_MODEL_DIR          /opt/ml/model              (-> model.tar.gz)
    checkpoints      --checkpoint-dir   $SM_CHECKPOINT_DIR     /opt/ml/checkpoints        (<-> checkpoint_s3_uri)
    other outputs    --output-data-dir  $SM_OUTPUT_DATA_DIR    /opt/ml/output/data        (training.json copy)
    failure reason   --failure-file     $SM_OUTPUT_DIR/failure /opt/ml/output/failure

Hyperparameters are `schemas.training.TrainingConfig` fields, every value a string (`training_config_from_
hyperparameters`). With spot training SageMaker syncs the checkpoint folder to `checkpoint_s3_uri` and, after an
interruption, restores it before starting the job again; `train_lora` then resumes from the newest complete
checkpoint. A failure writes its reason to the failure file (SageMaker shows it as FailureReason) and exits 1.
"""

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from schemas.training import TrainingReport, training_config_from_hyperparameters

logger = logging.getLogger(__name__)

ML_ROOT = Path("/opt/ml")
FAILURE_REASON_LIMIT = 1024  # what SageMaker keeps of the failure file


def _root(flag: str | None, env: Mapping[str, str], name: str, default: Path) -> Path:
    return Path(flag or env.get(name) or default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_jobs.training.sagemaker_train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", nargs="?", choices=["train"], help="SageMaker passes 'train'; optional")
    parser.add_argument("--hyperparameters", help="hyperparameters.json (all values strings)")
    parser.add_argument("--train", help="the dataset folder (dataset.json at its root)")
    parser.add_argument("--model-dir", help="where the adapter and training.json go")
    parser.add_argument("--checkpoint-dir", help="checkpoints, resumed from when present")
    parser.add_argument("--output-data-dir", help="extra outputs (a copy of training.json)")
    parser.add_argument("--failure-file", help="where a failure's reason is written")
    return parser


def _log_progress(step: int, total: int, loss: float) -> None:
    # One line per step: CloudWatch shows it, and SageMaker metric definitions can match `loss=`.
    print(f"step {step}/{total} loss={loss:.6f}", flush=True)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> TrainingReport:
    """Read the hyperparameters and dataset from SageMaker's roots, train, write the outputs there."""
    from .lora import train_lora

    config_dir = Path(environ.get("SM_INPUT_CONFIG_DIR") or ML_ROOT / "input" / "config")
    hyperparameters_file = Path(args.hyperparameters or config_dir / "hyperparameters.json")
    if not hyperparameters_file.is_file():
        raise FileNotFoundError(f"hyperparameters not found: {hyperparameters_file}")
    raw = json.loads(hyperparameters_file.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{hyperparameters_file}: expected a JSON object of hyperparameters")
    config = training_config_from_hyperparameters(raw)
    dataset_dir = _root(args.train, environ, "SM_CHANNEL_TRAIN", ML_ROOT / "input" / "data" / "train")
    model_dir = _root(args.model_dir, environ, "SM_MODEL_DIR", ML_ROOT / "model")
    checkpoint_dir = _root(args.checkpoint_dir, environ, "SM_CHECKPOINT_DIR", ML_ROOT / "checkpoints")
    output_data_dir = _root(args.output_data_dir, environ, "SM_OUTPUT_DATA_DIR", ML_ROOT / "output" / "data")
    logger.info("training %s/%s on %s into %s (checkpoints: %s)", config.brand, config.name, dataset_dir,
                model_dir, checkpoint_dir)  # fmt: skip
    report = train_lora(config, dataset_dir, model_dir, checkpoint_dir=checkpoint_dir, progress=_log_progress)
    output_data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / "training.json", output_data_dir / "training.json")
    return report


def _failure_file(args: argparse.Namespace, environ: Mapping[str, str]) -> Path:
    if args.failure_file:
        return Path(args.failure_file)
    if environ.get("SM_OUTPUT_DIR"):
        return Path(environ["SM_OUTPUT_DIR"]) / "failure"
    if environ.get("SM_OUTPUT_DATA_DIR"):
        return Path(environ["SM_OUTPUT_DATA_DIR"]).parent / "failure"
    return ML_ROOT / "output" / "failure"


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = run(args, env)
    except (ValidationError, ValueError, FileNotFoundError, OSError, RuntimeError) as error:
        reason = f"{type(error).__name__}: {error}"
        logger.error("training failed: %s", reason)
        failure = _failure_file(args, env)
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(reason[:FAILURE_REASON_LIMIT], encoding="utf-8")
        return 1
    logger.info("trained %d steps in %.1f s on %s", report.steps_done, report.wall_time_s, report.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
