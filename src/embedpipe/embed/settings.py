"""The embedding job's options, each declared once: how the model runs, and where Dataflow runs it.

`ModelSettings` (model, batch sizes, output size, device, precision, backend, GPU sharing, the secret of a
gated model's token) and `DataflowSettings` (project, location, workers, GPUs, KMS key, image) are frozen
dataclasses. Their fields are the options' one name everywhere: the `embed_corpus` component's parameters,
the flags of `embedpipe embed` and of the streaming job (`add_arguments`, underscores as dashes), the
pipeline parameters (`dataflow_<field>`, `pipeline_arguments`) and the Beam options
(`DataflowSettings.beam_args`).

Example:
    >>> DataflowSettings(project="p", location="us-central1", temp_location="gs://b/tmp").beam_args()[:3]
    ['--runner=DataflowRunner', '--project=p', '--region=us-central1']
    >>> ModelSettings(model="default", batch_size=8).checked().inference_batch_size
    1024
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

T = TypeVar("T")


def _option(default: Any, help: str, *, aliases: tuple[str, ...] = (), choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"help": help, "aliases": aliases, "choices": choices})


def add_arguments(group, settings: type, *, skip: tuple[str, ...] = ()) -> None:
    """Adds one flag per field of `settings` (`--batch-size`, and `--batch_size` as Beam spells it)."""
    for option in fields(settings):
        if option.name in skip:
            continue
        names = ["--" + option.name.replace("_", "-")]
        if "_" in option.name:
            names.append("--" + option.name)
        names += list(option.metadata.get("aliases", ()))
        help_text = option.metadata.get("help", "") + (" (default: %(default)s)" if option.default != "" else "")
        if isinstance(option.default, bool):
            group.add_argument(*names, dest=option.name, action="store_true", help=option.metadata.get("help", ""))
            continue
        choices = option.metadata.get("choices") or None
        group.add_argument(
            *names,
            dest=option.name,
            type=type(option.default),
            default=option.default,
            choices=choices,
            help=help_text,
        )


def from_mapping(settings: type[T], values: Mapping[str, Any] | argparse.Namespace) -> T:
    """The settings whose fields `values` has (a parsed command line, a component's arguments)."""
    if isinstance(values, argparse.Namespace):
        values = vars(values)
    return settings(**{f.name: values[f.name] for f in fields(settings) if f.name in values})


def _names(settings: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(settings))


@dataclass(frozen=True)
class ModelSettings:
    """How the model embeds: which model, how much at a time, on what and with which backend.

    Attributes:
        model: "default" (the packaged MiniLM), a local or gs:// sentence-transformers folder, or a hub id.
        batch_size: Texts per forward pass.
        inference_batch_size: Texts per RunInference batch (sorted by length inside the model).
        tokens_per_batch: Padded tokens per forward pass (0 = auto: 2,048 on CPU with torch, no limit on
            GPU or with onnx-int8; -1 = no limit).
        output_dimensionality: Leading dimensions kept, re-normalised (0 = all).
        device: "cpu", "cuda", ... ("" = cuda when there is one).
        precision: "auto" (bf16 on GPU), "fp32" or "bf16".
        backend: "torch", or "onnx-int8": the model quantized to int8 at job start and run by ONNX Runtime
            on CPU workers.
        share_across_processes: One model per worker machine instead of one per SDK process (GPU workers).
        model_copies: Models per machine when shared (the number of GPUs).
        hf_token_secret: Secret Manager secret version (`projects/P/secrets/S/versions/V`) holding a Hugging
            Face token, for a gated hub model; read where the model is loaded (the launcher and each worker,
            whose service account needs access to it) and never logged ("" = none).
        threads: torch / ONNX Runtime threads per worker process (0 = the process's share of the cores it may
            use, `embedpipe.threads`; `$EMBEDPIPE_THREADS` on the worker does the same).
        processes_per_machine: Worker processes sharing one machine's cores, which divide it for `threads`
            (0 = from the runner when the job starts: `--direct_num_workers` in Beam's multi-process local
            mode, one per vCPU on Dataflow CPU workers; -1 = one per core).
    """

    model: str = _option("default", "model folder, gs:// folder, hub id or 'default'")
    batch_size: int = _option(32, "texts per forward pass")
    inference_batch_size: int = _option(1024, "texts per RunInference batch, sorted by length inside")
    tokens_per_batch: int = _option(
        0, "padded tokens per forward pass (0 = auto: 2048 on CPU with torch; -1 = no limit)"
    )
    output_dimensionality: int = _option(0, "keep this many leading dimensions, re-normalised (0 = all)")
    device: str = _option("", "cpu, cuda, ... ('' = cuda when there is one)")
    precision: str = _option("auto", "auto = bf16 on GPU", choices=("auto", "fp32", "bf16"))
    backend: str = _option(
        "torch", "torch, or onnx-int8 (int8 by ONNX Runtime on CPU workers)", choices=("torch", "onnx-int8")
    )
    share_across_processes: bool = _option(
        False,
        "one model per worker machine (GPU workers) instead of one per process",
        aliases=("--share-model-across-processes",),
    )
    model_copies: int = _option(1, "models per machine when shared across processes")
    hf_token_secret: str = _option(
        "",
        "Secret Manager secret version (projects/P/secrets/S/versions/V) with a Hugging Face token for a gated model",
    )
    threads: int = _option(0, "torch threads per worker process (0 = its share of the cores it may use)")
    processes_per_machine: int = _option(
        0, "worker processes sharing a machine's cores (0 = from the runner; -1 = one per core)"
    )

    def checked(self) -> ModelSettings:
        """These settings, checked on the launching machine (the model's files too, for onnx-int8).

        Raises:
            ValueError: naming the bad setting and what it may be.
            ModelLoadError: the onnx-int8 backend cannot read the model's files; a malformed hf_token_secret.
        """
        from embedpipe.models import BACKENDS, PRECISIONS, check_hf_token_secret, use_hf_token

        if self.batch_size < 1 or self.inference_batch_size < 1:
            raise ValueError(
                f"batch sizes must be positive, got batch_size={self.batch_size}, inference_batch_size={self.inference_batch_size}"
            )
        if self.tokens_per_batch < -1:
            raise ValueError(
                f"tokens_per_batch must be 0 (auto), -1 (no limit) or positive, got {self.tokens_per_batch}"
            )
        if self.output_dimensionality < 0:
            raise ValueError(f"output_dimensionality must be 0 (all) or positive, got {self.output_dimensionality}")
        if self.threads < 0:
            raise ValueError(f"threads must be 0 (auto) or positive, got {self.threads}")
        if self.processes_per_machine < -1:
            raise ValueError(
                f"processes_per_machine must be 0 (from the runner), -1 (one per core) or positive, "
                f"got {self.processes_per_machine}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        check_hf_token_secret(self.hf_token_secret)
        if self.backend == "onnx-int8":
            from embedpipe.backend import check_model_files

            if self.device not in ("", "cpu") or self.precision == "bf16" or self.share_across_processes:
                raise ValueError(
                    "backend 'onnx-int8' is for CPU workers: leave device, precision and share_across_processes at "
                    f"their defaults (got device={self.device!r}, precision={self.precision!r}, "
                    f"share_across_processes={self.share_across_processes})"
                )
            with use_hf_token(self.hf_token_secret):
                check_model_files(self.model)
        return replace(self, inference_batch_size=max(self.inference_batch_size, self.batch_size))

    def identity(self) -> str:
        """Model fingerprint + backend + output size: part of every content hash."""
        from embedpipe.models import model_identity

        return model_identity(self.model, backend=self.backend, output_dimensionality=self.output_dimensionality)


@dataclass(frozen=True)
class DeadLetterLimits:
    """When the batch job fails for its dead letters (checked after it ran; they are kept for inspection).

    Attributes:
        max_dead_letter_share: The job fails when more than this share of the records it read became dead
            letters (1 = never for the share).
        max_dead_letters: The job fails when more than this many records became dead letters (-1 = no limit
            by count).
    """

    max_dead_letter_share: float = _option(0.1, "fail the job when more than this share of records are dead letters")
    max_dead_letters: int = _option(
        -1, "fail the job when more than this many records are dead letters (-1 = no limit)"
    )

    def checked(self) -> DeadLetterLimits:
        if not 0.0 <= self.max_dead_letter_share <= 1.0:
            raise ValueError(f"max_dead_letter_share must be between 0 and 1, got {self.max_dead_letter_share}")
        if self.max_dead_letters < -1:
            raise ValueError(f"max_dead_letters must be -1 (no limit) or >= 0, got {self.max_dead_letters}")
        return self

    def exceeded(self, dead_letters: int, records: int) -> str:
        """Why `dead_letters` of `records` read is too many ("" when within the limits)."""
        share = dead_letters / records if records else 0.0
        over = []
        if share > self.max_dead_letter_share:
            over.append(f"max_dead_letter_share {self.max_dead_letter_share:g}")
        if 0 <= self.max_dead_letters < dead_letters:
            over.append(f"max_dead_letters {self.max_dead_letters}")
        if not over:
            return ""
        return (
            f"{dead_letters:,} of {records:,} records read ({share:.1%}) are dead letters, over {' and '.join(over)}"
        )


#: Dataflow job names: lower-case letters, digits and '-', starting with a letter.
_JOB_NAME = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class DataflowSettings:
    """Where and on what Dataflow runs the embedding job (batch or streaming).

    Attributes:
        project: Google Cloud project of the job ("" = the environment's, see `dataflow.default_project`).
        location: Dataflow region, e.g. "us-central1" (Beam's `--region`).
        temp_location: gs:// folder for Dataflow's temporary and staging files.
        service_account: Worker service account e-mail ("" = the project's default compute account).
        network: VPC network of the workers.
        subnetwork: Subnetwork URL of the workers (regions/<r>/subnetworks/<s>).
        machine_type: Worker machine type (GPU workers need e.g. "g2-standard-8" for L4).
        max_workers: Upper bound for autoscaling (0 = Dataflow's default).
        accelerator_type: GPU per worker, e.g. "nvidia-l4", "nvidia-tesla-t4" ("" = CPU workers).
        accelerator_count: GPUs per worker.
        kms_key: Cloud KMS key (`projects/P/locations/L/keyRings/R/cryptoKeys/K`, in the job's region) that
            encrypts the job's data at rest (CMEK; Beam's `--dataflow_kms_key`, "used in Dataflow state
            operations (GBK, Streaming)"; "" = Google-managed). The gs:// temp folder keeps its bucket's key.
        dataflow_image: Worker image ("" = `embedpipe.images.DATAFLOW_IMAGE`, which has embedpipe, the
            pinned Beam and torch installed, so nothing is pip-installed on workers; Beam's
            `--sdk_container_image`).
        job_name: Dataflow job name ("" = `<kind>-<UTC time>`; keep one name to `--update` a streaming job).
    """

    project: str = _option("", "Google Cloud project ('' = the environment's)")
    location: str = _option("us-central1", "Dataflow region", aliases=("--region",))
    temp_location: str = _option("", "gs:// folder for Dataflow temp files")
    service_account: str = _option("", "worker service account e-mail ('' = project default)")
    network: str = _option("", "VPC network of the workers")
    subnetwork: str = _option("", "subnetwork URL of the workers (regions/R/subnetworks/S)")
    machine_type: str = _option("", "worker machine type, e.g. g2-standard-8")
    max_workers: int = _option(0, "autoscaling limit (0 = Dataflow default)", aliases=("--max_num_workers",))
    accelerator_type: str = _option("", "GPU per worker, e.g. nvidia-l4 ('' = CPU workers)")
    accelerator_count: int = _option(1, "GPUs per worker")
    kms_key: str = _option("", "Cloud KMS key of the job (CMEK), projects/P/locations/L/keyRings/R/cryptoKeys/K")
    dataflow_image: str = _option(
        "",
        "worker image ('' = this version's embedpipe-dataflow)",
        aliases=("--sdk-container-image", "--sdk_container_image"),
    )
    job_name: str = _option("", "Dataflow job name ('' = <kind>-<UTC time>)")

    @property
    def gpu(self) -> bool:
        return bool(self.accelerator_type)

    def model_on_workers(self, model: ModelSettings) -> ModelSettings:
        """The GPU-sharing rule: on GPU workers one model per GPU serves every SDK process of the machine."""
        if not self.gpu:
            return model
        return replace(
            model,
            share_across_processes=True,
            model_copies=max(model.model_copies, self.accelerator_count, 1),
        )

    def beam_args(self, *, kind: str = "embed-corpus", streaming: bool = False) -> list[str]:
        """Beam pipeline options for a Dataflow run on our worker image.

        Args:
            kind: Prefix of the default job name.
            streaming: Add `--streaming`.

        Raises:
            ValueError: no project, no gs:// temp_location, or a GPU count below 1.
        """
        from embedpipe.images import DATAFLOW_IMAGE

        if not self.project:
            raise ValueError("DataflowRunner needs a project (the pipeline's project is used when empty on Vertex)")
        if not self.temp_location.startswith("gs://"):
            raise ValueError(f"DataflowRunner needs a gs:// temp_location, got {self.temp_location!r}")
        job_name = self.job_name or kind + "-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        args = [
            "--runner=DataflowRunner",
            f"--project={self.project}",
            f"--region={self.location}",
            f"--temp_location={self.temp_location}",
            f"--job_name={dataflow_job_name(job_name)}",
            f"--sdk_container_image={self.dataflow_image or DATAFLOW_IMAGE}",
            "--sdk_location=container",  # Beam is in the image; nothing is staged or installed at start
            "--experiments=use_runner_v2",
        ]
        optional = {
            "--service_account_email": self.service_account,
            "--network": self.network,
            "--subnetwork": self.subnetwork,
            "--machine_type": self.machine_type,
            "--max_num_workers": self.max_workers,
            "--dataflow_kms_key": self.kms_key,
        }
        args += [f"{flag}={value}" for flag, value in optional.items() if value]
        if self.accelerator_type:
            if self.accelerator_count < 1:
                raise ValueError(
                    f"accelerator_count must be at least 1 with accelerator_type {self.accelerator_type!r}"
                )
            args.append(
                "--dataflow_service_options=worker_accelerator="
                f"type:{self.accelerator_type};count:{self.accelerator_count};install-nvidia-driver"
            )
        return args + (["--streaming"] if streaming else [])


def dataflow_job_name(name: str) -> str:
    """Dataflow job names: lower-case letters, digits and '-', starting with a letter."""
    cleaned = _JOB_NAME.sub("-", name.lower()).strip("-")
    return cleaned if cleaned[:1].isalpha() else "embed-" + cleaned


#: The `DataflowSettings` fields the pipelines expose, as `dataflow_<field>` (project and location are the
#: pipeline's own); the worker image is the pinned one of this version, and job names are generated.
PIPELINE_DATAFLOW_FIELDS = tuple(n for n in _names(DataflowSettings) if n not in ("dataflow_image", "job_name"))


def pipeline_arguments() -> dict[str, str]:
    """pipeline parameter -> `embed_corpus` argument, for the Dataflow settings."""
    return {name if name in ("project", "location") else f"dataflow_{name}": name for name in PIPELINE_DATAFLOW_FIELDS}
