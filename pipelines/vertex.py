"""How `tune_and_index` meets Vertex AI: where fine-tune and evaluate run, retries, Model Registry versions.

Fine-tune runs in one of two ways, chosen when the pipeline is compiled:

- as a task of the pipeline (`tune_and_index`): kfp.local runs it, and on Vertex it gets the GPU from
  `set_accelerator_type`, with the run's service account, network and CMEK key (the `PipelineJob`'s);
- as a Vertex AI CustomJob (`tune_and_index_custom_job`), through GCPC's
  `create_custom_training_job_from_component`: its own machine type, service account, VPC network and
  CMEK key (`training_machine_type`, `training_service_account`, `training_network`,
  `encryption_spec_key_name`).

Why two compiled pipelines and not a `dsl.If`: kfp.local's SubprocessRunner runs lightweight components
only (not GCPC's launcher), and it cannot pass on a `dsl.OneOf` of artifacts (kfp 2.17: "Expected 1
artifact in ArtifactSelectorSpec"), which joining a task branch and a CustomJob branch needs; a branch
group before the quality gate would also renumber the gate's group in the compiled YAML. Both come from
one pipeline function: `custom_job_variant` compiles it again with fine-tune as a CustomJob.

Example:
    >>> from embedpipe.pipelines import tune_and_index_custom_job
    >>> tune_and_index_custom_job.name
    'embedpipe-tune-and-index-custom-job'
"""

import contextvars
import copy

from google_cloud_pipeline_components.types.artifact_types import VertexModel
from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component
from google_cloud_pipeline_components.v1.endpoint import EndpointCreateOp, ModelDeployOp
from google_cloud_pipeline_components.v1.model import ModelUploadOp
from kfp import dsl

from embedpipe.components import fine_tune
from embedpipe.images import TRAIN_IMAGE

#: A failed or preempted fine-tune is started again (after 1, 2, 4 minutes) and resumes from the last
#: checkpoint in its model folder, continuing the step count (components/fine_tune/README.md).
FINE_TUNE_RETRY = {"num_retries": 3, "backoff_duration": "60s", "backoff_factor": 2.0, "backoff_max_duration": "3600s"}

#: fine_tune as a Vertex AI CustomJob (same inputs and outputs, plus the CustomJob's settings). Made here,
#: at import: GCPC's helper fails when called inside a pipeline function after a task
#: (kubeflow/pipelines#9320). Its own component name keeps the task's name `fine-tune` for the other way.
fine_tune_custom_job = create_custom_training_job_from_component(fine_tune, display_name="fine-tune")
fine_tune_custom_job.component_spec.name = "fine-tune-custom-job"
#: The worker pool GCPC derived from fine_tune (our train image, the component's command); the pipeline
#: fills in the machine from its parameters.
_FINE_TUNE_WORKER_POOL = fine_tune_custom_job.component_spec.inputs["worker_pool_specs"].default[0]

_CUSTOM_JOB = contextvars.ContextVar("embedpipe_fine_tune_as_custom_job", default=False)


def custom_job_variant(pipeline_func, *, name: str, description: str):
    """The pipeline compiled again from `pipeline_func`, with fine-tune as a Vertex AI CustomJob.

    Args:
        pipeline_func: The function of a `@dsl.pipeline` (its `.pipeline_func`) that trains with `fine_tune_task`.
        name: The new pipeline's name.
        description: Its description.

    Returns:
        The pipeline (a KFP graph component), to compile or submit; kfp.local cannot run it.
    """
    token = _CUSTOM_JOB.set(True)
    try:  # KFP runs the function now, to build the graph, so fine_tune_task sees the flag
        return dsl.pipeline(name=name, description=description)(pipeline_func)
    finally:
        _CUSTOM_JOB.reset(token)


def fine_tune_task(parameters: dict, **arguments) -> dsl.PipelineTask:
    """The fine-tune task with its machine: a task of the pipeline, or a Vertex AI CustomJob in a pipeline
    built by `custom_job_variant`. The caller sets its display name and retry policy (`FINE_TUNE_RETRY`).

    Args:
        parameters: The pipeline's parameters (its `locals()`): `accelerator_type`, `accelerator_count`,
            `training_cpu_limit`, `training_memory_limit` for a task; `project`, `location`,
            `training_machine_type`, `training_service_account`, `training_network` and
            `encryption_spec_key_name` for a CustomJob.
        **arguments: fine_tune's arguments.

    Returns:
        The task; its `model` output is the tuned model either way.
    """
    if _CUSTOM_JOB.get():
        pool = copy.deepcopy(_FINE_TUNE_WORKER_POOL)
        pool["machine_spec"] = {  # GCPC's launcher drops empty fields: "" and 0 = a CPU machine
            "machine_type": parameters["training_machine_type"],
            "accelerator_type": parameters["accelerator_type"],
            "accelerator_count": parameters["accelerator_count"],
        }
        task = fine_tune_custom_job(
            **arguments,
            project=parameters["project"],
            location=parameters["location"],
            worker_pool_specs=[pool],
            service_account=parameters["training_service_account"],
            network=parameters["training_network"],
            encryption_spec_key_name=parameters["encryption_spec_key_name"],
        )
    else:
        task = (
            fine_tune(**arguments)
            .set_accelerator_type(parameters["accelerator_type"])
            .set_accelerator_limit(parameters["accelerator_count"])
            .set_cpu_limit(parameters["training_cpu_limit"])
            .set_memory_limit(parameters["training_memory_limit"])
        )
    return task


def on_evaluation_machine(task: dsl.PipelineTask, parameters: dict) -> dsl.PipelineTask:
    """Puts an evaluate task on the train image (CUDA torch, which runs on CPU too) with the evaluation GPUs.

    kfp.local ignores both; on Vertex `evaluation_accelerator_type`/`_count`, `evaluation_cpu_limit` and
    `evaluation_memory_limit` pick the machine (1 L4 + 8 vCPU + 32G = g2-standard-8).
    """
    return (
        task.set_container_image(TRAIN_IMAGE)
        .set_accelerator_type(parameters["evaluation_accelerator_type"])
        .set_accelerator_limit(parameters["evaluation_accelerator_count"])
        .set_cpu_limit(parameters["evaluation_cpu_limit"])
        .set_memory_limit(parameters["evaluation_memory_limit"])
    )


def register_and_deploy(serving_model, parameters: dict) -> None:
    """Registers the packaged model in Model Registry (a new model, or a version of `parent_model`), and
    deploys it to a new endpoint when `deploy_model`.

    Args:
        serving_model: package_for_serving's `serving_model` (an UnmanagedContainerModel).
        parameters: The pipeline's parameters (its `locals()`).
    """
    p = parameters
    upload = {
        "project": p["project"],
        "location": p["location"],
        "display_name": p["model_display_name"],
        "unmanaged_container_model": serving_model,
        "version_aliases": p["model_version_aliases"],
        "labels": p["model_labels"],
        "encryption_spec_key_name": p["encryption_spec_key_name"],
    }
    # GCPC's ModelUploadOp takes the parent as a VertexModel artifact, so a resource name is imported first.
    with dsl.If(p["parent_model"] == "", name="new-model"):
        new_model = ModelUploadOp(**upload).set_display_name("register-model")
    with dsl.Else(name="new-version"):
        parent = dsl.importer(
            artifact_uri=f"https://{p['location']}-aiplatform.googleapis.com/v1/{p['parent_model']}",
            artifact_class=VertexModel,
            metadata={"resourceName": p["parent_model"]},
        ).set_display_name("import-parent-model")
        new_version = ModelUploadOp(parent_model=parent.output, **upload).set_display_name("register-model-version")
    with dsl.If(p["deploy_model"] == True, name="deploy"):  # noqa: E712
        endpoint = EndpointCreateOp(
            project=p["project"],
            location=p["location"],
            display_name=p["model_display_name"],
            encryption_spec_key_name=p["encryption_spec_key_name"],
        )
        ModelDeployOp(
            model=dsl.OneOf(new_model.outputs["model"], new_version.outputs["model"]),
            endpoint=endpoint.outputs["endpoint"],
            deployed_model_display_name=p["model_display_name"],
            dedicated_resources_machine_type=p["endpoint_machine_type"],
            dedicated_resources_accelerator_type=p["endpoint_accelerator_type"],
            dedicated_resources_accelerator_count=p["endpoint_accelerator_count"],
            dedicated_resources_min_replica_count=p["endpoint_min_replicas"],
            dedicated_resources_max_replica_count=p["endpoint_max_replicas"],
        ).set_display_name("deploy-model")
