"""Reading what a model needs: a gated model's Hugging Face token from Secret Manager, and its prompts file.

The token is read at run time through a fake Secret Manager client and must never show up in a log
record, printed output, an exception message or a config's repr. A prompts file that cannot be read is
an error naming the model and the reason; a model that simply has no prompts file has no prompts.
"""

import json
import logging
import os
import types

import httpx
import pytest

from embedpipe import models, storage
from embedpipe.models import ModelLoadError, model_prompts, packaged_model_path

TOKEN = "hf_FAKE0123456789abcdefTOKEN"
SECRET = "projects/my-project/secrets/hf-token/versions/3"
GEMMA_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


class FakeSecrets:
    """Just `access_secret_version` of google.cloud.secretmanager.SecretManagerServiceClient."""

    def __init__(self, values: dict[str, str] | None = None, error: Exception | None = None):
        self.values = values if values is not None else {SECRET: TOKEN}
        self.error = error
        self.names: list[str] = []

    def access_secret_version(self, request):
        self.names.append(request["name"])
        if self.error is not None:
            raise self.error
        data = self.values[request["name"]].encode()
        return types.SimpleNamespace(payload=types.SimpleNamespace(data=data))


@pytest.fixture
def secrets(monkeypatch):
    """Every SecretManagerServiceClient() made while the test runs is this fake."""
    from google.cloud import secretmanager

    fake = FakeSecrets()
    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", lambda *args, **kwargs: fake)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return fake


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache (offline, as every test runs); `add` puts a hub model in it."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def add(repo_id: str, files: dict[str, bytes], missing: tuple[str, ...] = ()):
        commit = "0123456789abcdef0123456789abcdef01234567"
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        for name, data in files.items():
            (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
            (repo / "snapshots" / commit / name).write_bytes(data)
        for name in missing:  # what huggingface_hub records when the hub said "no such file"
            (repo / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
            (repo / ".no_exist" / commit / name).touch()

    return add


# -- the token ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret, name",
    [
        ("", ""),
        (SECRET, SECRET),
        ("projects/p/secrets/hf-token", "projects/p/secrets/hf-token/versions/latest"),
        (" projects/p/secrets/s/versions/latest ", "projects/p/secrets/s/versions/latest"),
    ],
)
def test_secret_names_of_the_token(secret, name):
    assert models.check_hf_token_secret(secret) == name


@pytest.mark.parametrize("secret", ["hf-token", "projects/p/secrets", "projects/p/topics/t/versions/1", TOKEN])
def test_a_malformed_secret_name_is_refused_with_the_form_it_must_have(secret):
    with pytest.raises(ModelLoadError, match="projects/PROJECT/secrets/NAME/versions/VERSION") as caught:
        models.check_hf_token_secret(secret)
    assert TOKEN not in str(caught.value)  # the token given by mistake is not echoed


def test_the_token_is_set_for_the_block_only_and_huggingface_hub_sees_it(secrets, monkeypatch):
    from huggingface_hub import get_token

    with models.use_hf_token(SECRET):
        assert os.environ["HF_TOKEN"] == TOKEN
        assert get_token() == TOKEN
    assert "HF_TOKEN" not in os.environ
    assert secrets.names == [SECRET]
    monkeypatch.setenv("HF_TOKEN", "the-environment-s-own")
    with models.use_hf_token(SECRET):
        assert os.environ["HF_TOKEN"] == TOKEN
    assert os.environ["HF_TOKEN"] == "the-environment-s-own"
    with models.use_hf_token(""):  # no secret: nothing read, nothing changed
        assert os.environ["HF_TOKEN"] == "the-environment-s-own"
    assert secrets.names == [SECRET, SECRET]  # read each time a model is loaded, never kept


def test_a_secret_that_cannot_be_read_names_the_secret(secrets):
    secrets.error = PermissionError("403 Permission 'secretmanager.versions.access' denied")
    with pytest.raises(ModelLoadError, match=f"could not read the Hugging Face token from .*{SECRET}.*denied"):
        with models.use_hf_token(SECRET):
            pass
    secrets.error, secrets.values = None, {SECRET: "  \n"}
    with pytest.raises(ModelLoadError, match="holds an empty Hugging Face token"):
        models.read_hf_token(SECRET)


def test_an_error_inside_the_block_never_carries_the_token(secrets):
    with pytest.raises(ModelLoadError) as caught:
        with models.use_hf_token(SECRET):
            raise OSError(f"401 Client Error for url ...?token={TOKEN}")
    assert TOKEN not in str(caught.value) and "token=***" in str(caught.value)
    assert "HF_TOKEN" not in os.environ


def test_the_token_reaches_every_loader_and_appears_in_no_log_output_or_repr(
    secrets, hub_cache, monkeypatch, caplog, capfd, tmp_path
):
    """load_model, the embedding job (launcher and worker), fine-tuning, evaluation: each loads under the token."""
    import huggingface_hub
    import pandas as pd
    import sentence_transformers

    from embedpipe import evaluate
    from embedpipe.embed.handler import SentenceTransformerHandler
    from embedpipe.embed.job import prepare_config
    from embedpipe.embed.settings import ModelSettings
    from embedpipe.fine_tune.model import load_base_model
    from embedpipe.fine_tune.settings import FineTuneSettings

    caplog.set_level(logging.DEBUG)
    seen: dict[str, str | None] = {}

    # 1. load_model itself
    real_st = sentence_transformers.SentenceTransformer

    def recording_st(*args, **kwargs):
        seen.setdefault("SentenceTransformer", os.environ.get("HF_TOKEN"))
        return real_st(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", recording_st)
    models.load_model("default", device="cpu", hf_token_secret=SECRET)
    assert seen.pop("SentenceTransformer") == TOKEN

    # 2. the embedding job's launcher reads a gated hub model's prompts under the token
    real_download = huggingface_hub.hf_hub_download

    def recording_download(repo_id, filename, **kwargs):
        seen["hf_hub_download"] = huggingface_hub.get_token()
        return real_download(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", recording_download)
    hub_cache(
        "org/gated-model", {"config_sentence_transformers.json": json.dumps({"prompts": GEMMA_PROMPTS}).encode()}
    )
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "text": "hello"}\n')
    config = prepare_config(
        str(corpus), str(tmp_path / "out"), model=ModelSettings("org/gated-model", hf_token_secret=SECRET)
    )
    assert seen.pop("hf_hub_download") == TOKEN
    assert config.prompts.document == "title: none | text: "
    assert TOKEN not in repr(config) and SECRET in repr(config)

    # 3. the worker's ModelHandler, 4. fine-tuning's base model, 5. evaluation: each through its loader
    def recording_load_model(reference, **kwargs):
        seen["load_model"] = os.environ.get("HF_TOKEN") or kwargs.get("hf_token_secret")
        raise ModelLoadError("stop here")

    monkeypatch.setattr(models, "load_model", recording_load_model)
    with pytest.raises(ModelLoadError, match="stop here"):
        SentenceTransformerHandler(ModelSettings("default", hf_token_secret=SECRET)).load_model()
    assert seen.pop("load_model") == TOKEN
    labels = pd.DataFrame({"query-id": ["q1"], "corpus-id": ["d1"], "score": [1]})
    monkeypatch.setattr(evaluate, "load_split", lambda *paths: (None, None, labels))
    with pytest.raises(ModelLoadError, match="stop here"):
        evaluate.run_evaluation("c", "q", "l", base_model="org/gated-model", hf_token_secret=SECRET)
    assert seen.pop("load_model") == SECRET
    base = load_base_model(FineTuneSettings(base_model="default", device="cpu", hf_token_secret=SECRET))
    assert seen.pop("SentenceTransformer") == TOKEN and base.dimension == 384

    assert "HF_TOKEN" not in os.environ
    out, err = capfd.readouterr()
    assert TOKEN not in caplog.text and TOKEN not in out and TOKEN not in err
    assert all(TOKEN not in str(record.args) for record in caplog.records)


def test_settings_refuse_a_malformed_secret_before_any_work():
    from embedpipe.embed.settings import ModelSettings
    from embedpipe.fine_tune.settings import FineTuneError, FineTuneSettings

    with pytest.raises(ValueError, match="hf_token_secret .value not shown. must be the name of a Secret Manager"):
        ModelSettings(hf_token_secret="hf-token").checked()
    with pytest.raises(FineTuneError, match="hf_token_secret"):
        FineTuneSettings(hf_token_secret="hf-token")


def test_the_embedding_job_takes_the_secret_as_a_flag():
    import argparse

    from embedpipe.embed.settings import ModelSettings, add_arguments, from_mapping

    parser = argparse.ArgumentParser()
    add_arguments(parser, ModelSettings)
    settings = from_mapping(ModelSettings, parser.parse_args(["--hf-token-secret", SECRET]))
    assert settings.hf_token_secret == SECRET
    assert "hf_token_secret" not in settings.identity()  # never part of what decides a vector


# -- the prompts file ---------------------------------------------------------------------------------------


def model_folder(tmp_path, config: bytes | None, *, as_folder: bool = False):
    """A copy of the packaged MiniLM's small files with the given config_sentence_transformers.json."""
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    (folder / "modules.json").write_bytes((packaged_model_path() / "modules.json").read_bytes())
    target = folder / "config_sentence_transformers.json"
    if as_folder:
        target.mkdir()
    elif config is not None:
        target.write_bytes(config)
    return str(folder)


def test_a_model_without_a_prompts_file_has_no_prompts(tmp_path, hub_cache):
    assert model_prompts(model_folder(tmp_path, None)) == {}
    assert model_prompts(model_folder(tmp_path / "2", json.dumps({"prompts": {}}).encode())) == {}
    hub_cache("org/no-prompts", {"modules.json": b"[]"}, missing=("config_sentence_transformers.json",))
    assert model_prompts("org/no-prompts") == {}


def test_prompts_are_read_from_a_folder_and_from_the_hub_cache(tmp_path, hub_cache):
    config = json.dumps({"prompts": GEMMA_PROMPTS}).encode()
    assert model_prompts(model_folder(tmp_path, config)) == GEMMA_PROMPTS
    hub_cache("org/with-prompts", {"config_sentence_transformers.json": config})
    assert model_prompts("org/with-prompts") == GEMMA_PROMPTS


@pytest.mark.parametrize(
    "config, as_folder, reason",
    [
        (b"{not json", False, "is not valid JSON"),
        (b"[1, 2]", False, "expected an object, got list"),
        (json.dumps({"prompts": ["query: "]}).encode(), False, "'prompts' must map prompt names to strings"),
        (None, True, "could not read .*config_sentence_transformers.json"),
    ],
)
def test_a_prompts_file_that_cannot_be_read_names_the_model_and_the_reason(tmp_path, config, as_folder, reason):
    folder = model_folder(tmp_path, config, as_folder=as_folder)
    with pytest.raises(ModelLoadError, match=f"model '{folder}'.*{reason}"):
        model_prompts(folder)


def test_a_hub_model_that_cannot_be_reached_is_an_error_not_a_model_without_prompts(hub_cache):
    # Offline (HF_HUB_OFFLINE, as in every test) with nothing cached: the hub was never asked.
    with pytest.raises(ModelLoadError, match="model 'google/embeddinggemma-300m': could not read .*not in the local"):
        model_prompts("google/embeddinggemma-300m")


def test_a_gated_hub_model_without_a_token_says_to_give_hf_token_secret(monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors

    def gated(repo_id, filename, **kwargs):
        response = httpx.Response(401, request=httpx.Request("GET", f"https://huggingface.co/{repo_id}"))
        raise errors.GatedRepoError(f"Access to model {repo_id} is restricted.", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(ModelLoadError, match="gated on the Hugging Face hub.*hf_token_secret.*restricted"):
        model_prompts("google/embeddinggemma-300m")


def test_the_embedding_job_stops_before_any_work_when_the_prompts_cannot_be_read(tmp_path, hub_cache):
    from embedpipe.embed.job import prepare_config

    with pytest.raises(ModelLoadError, match="org/unreachable.*could not read config_sentence_transformers.json"):
        prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "out"), model="org/unreachable")
    assert not (tmp_path / "out").exists()


def test_a_gs_model_whose_bucket_refuses_is_an_error_and_one_without_the_file_has_no_prompts(monkeypatch):
    from tests.unit.test_storage import FakeClient

    class Forbidden(Exception):
        pass

    class RefusingClient(FakeClient):
        def bucket(self, name):
            raise Forbidden("403 GET storage.googleapis.com/b: caller does not have storage.objects.get access")

    monkeypatch.setattr(storage, "gcs_client", lambda client=None: RefusingClient({}))
    with pytest.raises(ModelLoadError, match="model 'gs://b/model': could not read gs://b/model/config_sentence.*403"):
        model_prompts("gs://b/model")
    monkeypatch.setattr(storage, "gcs_client", lambda client=None: FakeClient({"b": {"model/modules.json": b"[]"}}))
    assert model_prompts("gs://b/model") == {}
    config = json.dumps({"prompts": GEMMA_PROMPTS}).encode()
    objects = {"model/config_sentence_transformers.json": config}
    monkeypatch.setattr(storage, "gcs_client", lambda client=None: FakeClient({"b": objects}))
    assert model_prompts("gs://b/model") == GEMMA_PROMPTS
