"""The compiled pipelines, read where Vertex AI reads them: CMEK keys, the training identity, caching,
retries, the evaluation GPUs and Model Registry versions (nothing here runs on Vertex)."""

import json
import re

import pytest
import yaml
from kfp import compiler

from embedpipe.images import TRAIN_IMAGE
from embedpipe.pipelines import embed_and_index, tune_and_index, tune_and_index_custom_job
from embedpipe.pipelines.vertex import FINE_TUNE_RETRY


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    specs = {}
    for pipeline in (tune_and_index, tune_and_index_custom_job, embed_and_index):
        path = out / f"{pipeline.name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        specs[pipeline] = yaml.safe_load(path.read_text())
    return specs


def tasks(spec) -> dict[str, list[dict]]:
    """Every task by name, with the tasks of the DAGs above it (root first), wherever it is nested."""
    found = {}

    def walk(dag, above):
        for name, task in dag["tasks"].items():
            found[name] = above + [task]
            sub = spec["components"][task["componentRef"]["name"]].get("dag")
            if sub:
                walk(sub, above + [task])

    walk(spec["root"]["dag"], [])
    return found


def root_parameter(spec, task_name: str, input_name: str) -> str:
    """The pipeline parameter a task's input comes from, followed up through the condition DAGs."""
    path = tasks(spec)[task_name]
    name = path[-1]["inputs"]["parameters"][input_name]["componentInputParameter"]
    for parent in reversed(path[:-1]):
        name = parent["inputs"]["parameters"][name]["componentInputParameter"]
    assert name in spec["root"]["inputDefinitions"]["parameters"], name
    return name


def executor(spec, task_name: str) -> dict:
    component = tasks(spec)[task_name][-1]["componentRef"]["name"]
    return spec["deploymentSpec"]["executors"][spec["components"][component]["executorLabel"]]["container"]


def payload(spec, task_name: str) -> dict:
    """The request body a GCPC launcher sends, its input placeholders as "@name"."""
    args = executor(spec, task_name)["args"]
    text = args[args.index("--payload") + 1]
    if text.startswith('{"Concat"'):
        text = "".join(json.loads(text)["Concat"])
    placeholder = r"\{\{\$\.inputs\.parameters\['(\w+)'\]\}\}"
    text = re.sub(rf'"{placeholder}"', r'"@\1"', text)  # a whole string value
    text = re.sub(rf"(?<=[/\w]){placeholder}|{placeholder}(?=[/\w])", r"@\1\2", text)  # inside a string
    return json.loads(re.sub(placeholder, r'"@\1"', text))  # a list, dict, number or boolean value


def test_the_kms_key_reaches_the_model_the_endpoint_and_the_dataflow_job(compiled):
    spec = compiled[tune_and_index]
    for task in ("model-upload", "model-upload-2", "endpoint-create"):
        assert root_parameter(spec, task, "encryption_spec_key_name") == "encryption_spec_key_name", task
        assert payload(spec, task)["encryption_spec"] == {"kms_key_name": "@encryption_spec_key_name"}, task
    for task in ("embed-corpus", "embed-corpus-2"):
        assert root_parameter(spec, task, "kms_key") == "dataflow_kms_key", task
    spec = compiled[embed_and_index]
    for task in ("embed-corpus", "embed-changed"):
        name = next(n for n, path in tasks(spec).items() if path[-1]["taskInfo"]["name"] == task)
        assert root_parameter(spec, name, "kms_key") == "dataflow_kms_key", task
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["dataflow_kms_key"]["defaultValue"] == ""


def test_the_training_custom_job_runs_with_its_own_identity_network_key_and_machine(compiled):
    spec = compiled[tune_and_index_custom_job]
    assert "fine-tune" not in tasks(spec), "fine-tune runs as a CustomJob only"
    task = "fine-tune-custom-job"
    for argument, parameter in {
        "service_account": "training_service_account",
        "network": "training_network",
        "encryption_spec_key_name": "encryption_spec_key_name",
        "project": "project",
        "location": "location",
    }.items():
        assert root_parameter(spec, task, argument) == parameter, argument
    body = payload(spec, task)
    assert body["job_spec"]["service_account"] == "@service_account"
    assert body["job_spec"]["network"] == "@network"
    assert body["encryption_spec"] == {"kms_key_name": "@encryption_spec_key_name"}
    assert body["job_spec"]["worker_pool_specs"] == "@worker_pool_specs"
    assert "google_cloud_pipeline_components.container.v1.custom_job.launcher" in executor(spec, task)["command"]

    (pool,) = tasks(spec)[task][-1]["inputs"]["parameters"]["worker_pool_specs"]["runtimeValue"]["constant"]
    assert pool["container_spec"]["image_uri"] == TRAIN_IMAGE
    assert "fine_tune" in pool["container_spec"]["args"]
    for field, parameter in {
        "machine_type": "training_machine_type",
        "accelerator_type": "accelerator_type",
        "accelerator_count": "accelerator_count",
    }.items():
        channel = f"pipelinechannel--{parameter}"
        assert pool["machine_spec"][field] == "{{$.inputs.parameters['" + channel + "']}}", field
        assert root_parameter(spec, task, channel) == parameter
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["training_machine_type"]["defaultValue"] == "g2-standard-8"
    assert defaults["training_service_account"]["defaultValue"] == ""


def test_the_plain_pipeline_trains_in_a_task_and_both_declare_the_same_parameters(compiled):
    assert "fine-tune-custom-job" not in tasks(compiled[tune_and_index])
    assert (
        compiled[tune_and_index]["root"]["inputDefinitions"]
        == compiled[tune_and_index_custom_job]["root"]["inputDefinitions"]
    )


@pytest.mark.parametrize(
    "pipeline, uncached",
    [
        (tune_and_index, {"prepare-data", "select-corpus", "upload-vectors", "upload-vectors-base-model"}),
        (tune_and_index_custom_job, {"prepare-data", "select-corpus", "upload-vectors", "upload-vectors-base-model"}),
        (embed_and_index, {"embed-corpus", "embed-changed", "upload-vectors", "upload-vectors-incremental"}),
    ],
)
def test_caching_is_off_exactly_for_tasks_that_read_or_write_outside_the_run(compiled, pipeline, uncached):
    spec = compiled[pipeline]
    containers = {
        path[-1]["taskInfo"]["name"]: path[-1]
        for path in tasks(spec).values()
        if "dag" not in spec["components"][path[-1]["componentRef"]["name"]]
    }
    off = {name for name, task in containers.items() if not task.get("cachingOptions", {}).get("enableCache")}
    assert off == uncached


@pytest.mark.parametrize(
    "pipeline, task", [(tune_and_index, "fine-tune"), (tune_and_index_custom_job, "fine-tune-custom-job")]
)
def test_fine_tune_is_retried_and_nothing_else_is(compiled, pipeline, task):
    spec = compiled[pipeline]
    retried = {name: path[-1]["retryPolicy"] for name, path in tasks(spec).items() if "retryPolicy" in path[-1]}
    assert list(retried) == [task]
    assert retried[task] == {
        "maxRetryCount": FINE_TUNE_RETRY["num_retries"],
        "backoffDuration": "60s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "3600s",
    }


@pytest.mark.parametrize("pipeline", [tune_and_index, tune_and_index_custom_job])
def test_evaluation_runs_on_the_train_image_with_the_evaluation_gpus(compiled, pipeline):
    spec = compiled[pipeline]
    for task in ("evaluate", "evaluate-2"):
        container = executor(spec, task)
        assert container["image"] == TRAIN_IMAGE, task
        resources = container["resources"]
        for value, parameter in (
            (resources["accelerator"]["resourceType"], "evaluation_accelerator_type"),
            (resources["accelerator"]["resourceCount"], "evaluation_accelerator_count"),
            (resources["resourceCpuLimit"], "evaluation_cpu_limit"),
            (resources["resourceMemoryLimit"], "evaluation_memory_limit"),
        ):
            assert value == "{{$.inputs.parameters['pipelinechannel--" + parameter + "']}}"
            assert root_parameter(spec, task, "pipelinechannel--" + parameter) == parameter
    defaults = {name: p.get("defaultValue") for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert (defaults["evaluation_accelerator_type"], defaults["evaluation_accelerator_count"]) == ("NVIDIA_L4", 1)


def test_model_registry_versions_and_a_cpu_endpoint_by_default(compiled):
    spec = compiled[tune_and_index]
    for task in ("model-upload", "model-upload-2"):
        assert root_parameter(spec, task, "version_aliases") == "model_version_aliases"
        assert root_parameter(spec, task, "labels") == "model_labels"
    found = tasks(spec)
    assert "parent_model" not in found["model-upload"][-1]["inputs"].get("artifacts", {})
    parent = found["model-upload-2"][-1]["inputs"]["artifacts"]["parent_model"]["taskOutputArtifact"]
    assert found[parent["producerTask"]][-1]["taskInfo"]["name"] == "import-parent-model"
    assert root_parameter(spec, parent["producerTask"], "metadata") == "parent_model"
    new_model, new_version = (found[t][-2]["triggerPolicy"]["condition"] for t in ("model-upload", "model-upload-2"))
    assert new_model.endswith("parent_model'] == ''") and new_version == f"!({new_model})"

    defaults = {name: p.get("defaultValue") for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert (defaults["parent_model"], defaults["model_version_aliases"], defaults["model_labels"]) == ("", [], {})
    # the serving image is CPU-only: the endpoint's default machine has no GPU
    assert defaults["endpoint_machine_type"].startswith("n1-standard-")
    assert (defaults["endpoint_accelerator_type"], defaults["endpoint_accelerator_count"]) == ("", 0)
    deploy = found["model-deploy"][-1]["inputs"]
    assert root_parameter(spec, "model-deploy", "dedicated_resources_accelerator_type") == "endpoint_accelerator_type"
    assert "model" in deploy["artifacts"]  # the new model or the new version, whichever was registered


@pytest.mark.parametrize("pipeline", [tune_and_index, tune_and_index_custom_job])
def test_the_hf_token_secret_reaches_every_task_that_loads_a_model(compiled, pipeline):
    spec = compiled[pipeline]
    fine_tune = "fine-tune" if pipeline is tune_and_index else "fine-tune-custom-job"
    for task in ("evaluate", "evaluate-2", fine_tune, "embed-corpus", "embed-corpus-2"):
        assert root_parameter(spec, task, "hf_token_secret") == "hf_token_secret", task
    assert spec["root"]["inputDefinitions"]["parameters"]["hf_token_secret"]["defaultValue"] == ""
    spec = compiled[embed_and_index]
    for name, path in tasks(spec).items():
        if path[-1]["taskInfo"]["name"] in ("embed-corpus", "embed-changed"):
            assert root_parameter(spec, name, "hf_token_secret") == "hf_token_secret", name


@pytest.mark.parametrize("pipeline", [tune_and_index, tune_and_index_custom_job, embed_and_index])
def test_every_upload_task_gets_the_vector_search_index_and_update_method(compiled, pipeline):
    spec = compiled[pipeline]
    uploads = [
        name
        for name, path in tasks(spec).items()
        if path[-1]["componentRef"]["name"].startswith("comp-upload-vectors")
    ]
    assert len(uploads) == 2, uploads
    for task in uploads:
        for parameter in ("vector_search_index", "vector_search_update_method", "vector_search_previous_ids"):
            assert root_parameter(spec, task, parameter) == parameter, (task, parameter)
        assert root_parameter(spec, task, "target") == "vector_target"
    for task in uploads:
        component = spec["components"][tasks(spec)[task][-1]["componentRef"]["name"]]
        assert "vector_search_contents" in component["outputDefinitions"]["artifacts"]  # the files' place
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["vector_search_index"]["defaultValue"] == ""
    assert defaults["vector_search_update_method"]["defaultValue"] == "batch"
