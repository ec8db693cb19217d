"""Settings objects: each option declared once and reaching the component, the pipelines, argparse and Beam."""

import argparse
import inspect
from dataclasses import fields

import pytest

from embedpipe.components import embed_corpus
from embedpipe.embed.settings import (
    DataflowSettings,
    DeadLetterLimits,
    ModelSettings,
    add_arguments,
    from_mapping,
    pipeline_arguments,
)
from embedpipe.pipelines.embed_and_index import embed_and_index
from embedpipe.pipelines.options import EMBED_ARGUMENTS
from embedpipe.pipelines.tune_and_index import tune_and_index, tune_and_index_custom_job

KFP_TYPES = {str: "String", int: "Integer", bool: "Boolean", float: "Float"}


@pytest.mark.parametrize("settings", [ModelSettings, DataflowSettings, DeadLetterLimits])
def test_the_component_s_parameters_are_the_settings_fields_with_their_defaults(settings):
    inputs = embed_corpus.component_spec.inputs
    shared = [f for f in fields(settings) if f.name in inputs]
    assert shared, "embed_corpus exposes none of these settings"
    for option in shared:
        spec = inputs[option.name]
        assert spec.type == KFP_TYPES[type(option.default)], option.name
        assert spec.default == option.default, option.name
    # the component passes every option it has on, by name (embed_corpus_task(**arguments))
    assert {"model", "batch_size", "output_dimensionality", "backend"} <= set(inputs)
    assert {"project", "location", "machine_type", "accelerator_type", "dataflow_image"} <= set(inputs)


@pytest.mark.parametrize("pipeline", [tune_and_index, embed_and_index])
def test_every_dataflow_pipeline_parameter_is_a_settings_field_wired_to_the_component(pipeline):
    parameters = inspect.signature(pipeline.pipeline_func).parameters
    names = {f.name: f for f in fields(DataflowSettings)}
    dataflow = [p for p in parameters if p.startswith("dataflow_")]
    assert dataflow
    for parameter in dataflow:
        field_name = parameter.removeprefix("dataflow_")
        assert field_name in names, parameter
        assert type(parameters[parameter].default) is type(names[field_name].default), parameter
        assert EMBED_ARGUMENTS[parameter] == field_name
    assert pipeline_arguments()["location"] == "location" and "location" in parameters


def test_flags_are_the_field_names_and_accept_beam_s_spelling():
    parser = argparse.ArgumentParser()
    add_arguments(parser, DataflowSettings)
    add_arguments(parser, ModelSettings)
    args = parser.parse_args(
        [
            "--region",
            "europe-west4",
            "--sdk_container_image",
            "img",
            "--max-workers",
            "3",
            "--batch_size",
            "8",
            "--share-model-across-processes",
            "--backend",
            "onnx-int8",
        ]
    )
    dataflow, model = from_mapping(DataflowSettings, args), from_mapping(ModelSettings, args)
    assert (dataflow.location, dataflow.dataflow_image, dataflow.max_workers) == ("europe-west4", "img", 3)
    assert (model.batch_size, model.share_across_processes, model.backend) == (8, True, "onnx-int8")
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])


def test_gpu_workers_share_one_model_per_gpu():
    model = ModelSettings()
    assert DataflowSettings().model_on_workers(model) == model
    shared = DataflowSettings(accelerator_type="nvidia-l4", accelerator_count=2).model_on_workers(model)
    assert (shared.share_across_processes, shared.model_copies) == (True, 2)


@pytest.mark.parametrize(
    "settings, error",
    [
        (ModelSettings(batch_size=0), "batch sizes must be positive"),
        (ModelSettings(tokens_per_batch=-2), "tokens_per_batch must be"),
        (ModelSettings(output_dimensionality=-1), "output_dimensionality must be"),
        (ModelSettings(backend="tensorrt"), "unknown backend 'tensorrt'"),
        (ModelSettings(precision="fp16"), "unknown precision 'fp16'"),
        (ModelSettings(backend="onnx-int8", device="cuda"), "is for CPU workers"),
        (ModelSettings(threads=-1), "threads must be 0"),
        (ModelSettings(processes_per_machine=-2), "processes_per_machine must be"),
    ],
)
def test_model_settings_name_the_bad_setting(settings, error):
    with pytest.raises(ValueError, match=error):
        settings.checked()


def test_checked_settings_batch_at_least_one_forward_pass():
    assert ModelSettings(batch_size=64, inference_batch_size=16).checked().inference_batch_size == 64


def test_dataflow_settings_refuse_what_dataflow_would():
    with pytest.raises(ValueError, match="needs a project"):
        DataflowSettings(temp_location="gs://b/t").beam_args()
    with pytest.raises(ValueError, match="accelerator_count must be at least 1"):
        DataflowSettings(
            project="p", temp_location="gs://b/t", accelerator_type="nvidia-l4", accelerator_count=0
        ).beam_args()
    streaming = DataflowSettings(project="p", temp_location="gs://b/t").beam_args(kind="embed-stream", streaming=True)
    assert streaming[-1] == "--streaming" and any(a.startswith("--job_name=embed-stream-") for a in streaming)


def test_the_kms_key_is_a_dataflow_setting_from_pipeline_parameter_to_beam_option():
    key = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"
    assert (
        f"--dataflow_kms_key={key}" in DataflowSettings(project="p", temp_location="gs://b/t", kms_key=key).beam_args()
    )
    without = DataflowSettings(project="p", temp_location="gs://b/t").beam_args()
    assert not any(a.startswith("--dataflow_kms_key") for a in without)
    assert pipeline_arguments()["dataflow_kms_key"] == "kms_key" and EMBED_ARGUMENTS["dataflow_kms_key"] == "kms_key"
    assert embed_corpus.component_spec.inputs["kms_key"].default == ""


def test_the_custom_job_variant_wires_the_dataflow_parameters_too():
    test_every_dataflow_pipeline_parameter_is_a_settings_field_wired_to_the_component(tune_and_index_custom_job)


@pytest.mark.parametrize("pipeline", [tune_and_index, embed_and_index])
def test_the_dead_letter_limits_are_pipeline_parameters_wired_to_the_component(pipeline):
    parameters = inspect.signature(pipeline.pipeline_func).parameters
    inputs = embed_corpus.component_spec.inputs
    for option in fields(DeadLetterLimits):
        assert parameters[option.name].default == option.default, option.name
        assert EMBED_ARGUMENTS[option.name] == option.name and option.name in inputs


def test_dead_letter_limits_flags_checks_and_the_message_with_the_counts():
    parser = argparse.ArgumentParser()
    add_arguments(parser, DeadLetterLimits)
    limits = from_mapping(
        DeadLetterLimits, parser.parse_args(["--max-dead-letter-share", "0.25", "--max_dead_letters", "3"])
    )
    assert limits == DeadLetterLimits(max_dead_letter_share=0.25, max_dead_letters=3)
    assert limits.exceeded(2, 8) == ""  # 25 %, 2 <= 3: within
    assert limits.exceeded(3, 8) == "3 of 8 records read (37.5%) are dead letters, over max_dead_letter_share 0.25"
    assert limits.exceeded(4, 100) == "4 of 100 records read (4.0%) are dead letters, over max_dead_letters 3"
    assert DeadLetterLimits().exceeded(0, 0) == "" and DeadLetterLimits().exceeded(1, 10) == ""
    assert "over max_dead_letter_share 0.1" in DeadLetterLimits().exceeded(2, 10)
    assert DeadLetterLimits(max_dead_letter_share=1.0).exceeded(10, 10) == ""
    for bad, error in [
        (DeadLetterLimits(max_dead_letter_share=1.5), "between 0 and 1"),
        (DeadLetterLimits(max_dead_letter_share=-0.1), "between 0 and 1"),
        (DeadLetterLimits(max_dead_letters=-2), "max_dead_letters must be"),
    ]:
        with pytest.raises(ValueError, match=error):
            bad.checked()


def test_embed_stream_takes_the_same_settings_and_connection_parameters_as_its_batch_siblings():
    from embedpipe.components import embed_stream, upload_vectors
    from embedpipe.embed.streaming.config import CONNECTION_PARAMETERS
    from embedpipe.vectorstore.connections import ConnectionSettings

    inputs = embed_stream.component_spec.inputs
    for settings in (ModelSettings, DataflowSettings):
        for option in fields(settings):
            if option.name in embed_corpus.component_spec.inputs:  # what embed_corpus exposes, embed_stream does too
                assert inputs[option.name].type == KFP_TYPES[type(option.default)], option.name
                assert inputs[option.name].default == option.default, option.name
    defaults = {f.name: f.default for f in fields(ConnectionSettings)}
    for parameter, field_name in CONNECTION_PARAMETERS.items():
        assert inputs[parameter].default == defaults[field_name], parameter
        assert inputs[parameter].default == upload_vectors.component_spec.inputs[parameter].default, parameter


def test_the_job_decides_the_worker_processes_from_the_runner_unless_told():
    from apache_beam.options.pipeline_options import PipelineOptions

    from embedpipe.embed.pipeline import EmbedConfig
    from embedpipe.embed.runtime import with_worker_processes

    def processes(model: ModelSettings, *args: str) -> int:
        config = EmbedConfig("c.jsonl", "jsonl", "out", model, prompts=None, model_identity="m")
        return with_worker_processes(config, PipelineOptions(list(args))).model_settings.processes_per_machine

    two = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert processes(ModelSettings()) == 1 and processes(ModelSettings(), *two) == 2
    assert processes(ModelSettings(processes_per_machine=3), *two) == 3, "a given count wins"
    assert processes(ModelSettings(), "--runner=DataflowRunner") == -1  # one SDK process per vCPU
    # GPU workers share one model per machine: its process has the cores to itself
    assert processes(ModelSettings(share_across_processes=True), "--runner=DataflowRunner") == 0
