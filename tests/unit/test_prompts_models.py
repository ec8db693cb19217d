import pytest

from embedpipe import models, prompts

GEMMA_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
}


def test_retrieval_prompts_of_a_gemma_style_model():
    p = prompts.resolve_prompts("retrieval_query", GEMMA_PROMPTS)
    assert p.format_queries(["q"]) == ["task: search result | query: q"]
    assert p.format_documents(["body", "body2"], ["A title", ""]) == [
        "title: A title | text: body",
        "title: none | text: body2",
    ]


def test_task_prompts_without_a_named_prompt_follow_the_gemma_template():
    assert prompts.resolve_prompts("QUESTION_ANSWERING", GEMMA_PROMPTS).query == "task: question answering | query: "
    assert prompts.resolve_prompts("FACT_VERIFICATION", GEMMA_PROMPTS).query == "task: fact checking | query: "


def test_symmetric_tasks_use_one_prompt_on_both_sides():
    p = prompts.resolve_prompts("SEMANTIC_SIMILARITY", GEMMA_PROMPTS)
    assert p.query == p.document == "task: sentence similarity | query: "
    assert p.format_documents(["x"], ["t"]) == ["task: sentence similarity | query: t x"]


def test_models_without_prompts_get_none_and_title_joined_to_text():
    p = prompts.resolve_prompts("CLUSTERING", {"query": "", "document": ""})
    assert (p.query, p.document) == ("", "")
    assert p.format_documents(["text"], ["Title"]) == ["Title text"]


def test_unknown_task_type_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task_type 'RETRIEVAL'.*RETRIEVAL_QUERY"):
        prompts.resolve_prompts("RETRIEVAL", {})


def test_packaged_model_names_resolve_to_the_installed_folder():
    path = models.resolve_model_path("default")
    assert path.endswith("model")
    assert models.resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == path
    assert models.resolve_model_path("google/embeddinggemma-300m") == "google/embeddinggemma-300m"


def test_missing_and_invalid_model_folders_fail_clearly(tmp_path):
    with pytest.raises(models.ModelLoadError, match="does not exist"):
        models.resolve_model_path(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelLoadError, match="not a sentence-transformers model folder"):
        models.resolve_model_path(str(tmp_path / "empty"))
