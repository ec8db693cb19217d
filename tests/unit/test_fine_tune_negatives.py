"""Negatives that help: mined hard negatives never a labelled-relevant document, the rank and margin filters,
no same-query duplicate in a batch, and the ranking loss each setting builds (plain, symmetric, guided)."""

import numpy as np
import pandas as pd
import pytest

from embedpipe.fine_tune import FineTuneError, FineTuneSettings
from embedpipe.fine_tune.negatives import (
    choose_negatives,
    fill_random_negatives,
    mine_hard_negatives,
    relevant_documents,
)
from embedpipe.fine_tune.trainer import batch_sampler, build_loss, ranking_loss, training_arguments
from embedpipe.prompts import resolve_prompts

PROMPTS = resolve_prompts("RETRIEVAL_QUERY", {})


class FakeModel:
    """Encodes each text to a fixed unit vector, so the base model's ranking is chosen by the test."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors
        self.prompts_given = []

    def encode(self, texts, prompt=None, normalize_embeddings=False, **kwargs):
        self.prompts_given.append(prompt)
        out = np.array([self.vectors[t] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _corpus(ids):
    return pd.DataFrame({"_id": ids, "title": [""] * len(ids), "text": [f"text of {i}" for i in ids]})


def _pairs(rows):
    """rows: (query id, corpus id); anchors and positives formatted as training_pairs formats them."""
    return pd.DataFrame(
        {
            "anchor": PROMPTS.format_queries([f"query {q}" for q, _ in rows]),
            "positive": PROMPTS.format_documents([f"text of {d}" for _, d in rows], [""] * len(rows)),
            "query-id": [q for q, _ in rows],
            "corpus-id": [d for _, d in rows],
        }
    )


def _vectors(corpus_ids, scores_by_doc, query_ids):
    """A query vector [1, 0] for every query and, per document, a vector whose cosine to it is the given score."""
    vectors = {PROMPTS.format_queries([f"query {q}"])[0]: [1.0, 0.0] for q in query_ids}
    for doc, score in scores_by_doc.items():
        vectors[PROMPTS.format_documents([f"text of {doc}"], [""])[0]] = [score, float(np.sqrt(1 - score**2))]
    assert set(corpus_ids) == set(scores_by_doc)
    return vectors


def test_a_second_positive_ranked_first_is_never_mined_as_a_negative():
    # q1 has two positives, d1 and d2; the base model ranks d1 first, d2 second, then d3.
    ids = ["d1", "d2", "d3", "d4"]
    scores = {"d1": 0.95, "d2": 0.9, "d3": 0.5, "d4": 0.1}
    labels = pd.DataFrame({"query-id": ["q1", "q1"], "corpus-id": ["d1", "d2"], "score": [1, 1]})
    model = FakeModel(_vectors(ids, scores, ["q1"]))
    # Pair (q1, d2): the other positive, d1, is ranked first (and above d2: the margin alone skips it too).
    mined = mine_hard_negatives(
        _pairs([("q1", "d2")]), _corpus(ids), labels, model, PROMPTS, range_min=0, relative_margin=0.0
    )
    assert mined["negative"].tolist() == PROMPTS.format_documents(["text of d3"], [""])
    assert set(model.prompts_given) == {""}  # texts are formatted once, by embedpipe.prompts
    # Pair (q1, d1): d2, the first document after the positive, scores below it, so only its label keeps it
    # out, and it is not in the mined pairs: the labels, not the pairs, say what is relevant.
    mined = mine_hard_negatives(
        _pairs([("q1", "d1")]), _corpus(ids), labels, model, PROMPTS, range_min=0, relative_margin=0.0
    )
    assert mined["negative"].tolist() == PROMPTS.format_documents(["text of d3"], [""])
    # The same pair without d2's label gets d2: the label is what keeps it out.
    mined = mine_hard_negatives(
        _pairs([("q1", "d1")]), _corpus(ids), labels.iloc[:1], model, PROMPTS, range_min=0, relative_margin=0.0
    )
    assert mined["negative"].tolist() == PROMPTS.format_documents(["text of d2"], [""])


def test_every_positive_of_a_query_is_kept_out_for_every_one_of_its_pairs():
    ids = [f"d{i}" for i in range(8)]
    scores = {f"d{i}": 0.9 - 0.1 * i for i in range(8)}
    positives = ["d0", "d1", "d2"]  # the three best-ranked documents are all relevant to q1
    labels = pd.DataFrame({"query-id": ["q1"] * 3, "corpus-id": positives, "score": [2, 1, 1]})
    model = FakeModel(_vectors(ids, scores, ["q1"]))
    pairs = _pairs([("q1", d) for d in positives])
    mined = mine_hard_negatives(pairs, _corpus(ids), labels, model, PROMPTS, range_min=0, relative_margin=0.0)
    relevant_texts = set(PROMPTS.format_documents([f"text of {d}" for d in positives], [""] * 3))
    assert len(mined) == 3 and not set(mined["negative"]) & relevant_texts
    # Without labels, the pairs themselves say what is relevant: the other pairs' positives stay out too.
    mined = mine_hard_negatives(pairs, _corpus(ids), None, model, PROMPTS, range_min=0, relative_margin=0.0)
    assert mined["negative"].tolist() == PROMPTS.format_documents(["text of d3"] * 3, [""] * 3)


def test_a_score_zero_label_is_not_relevant():
    labels = pd.DataFrame({"query-id": ["q1", "q1", "q2"], "corpus-id": ["d1", "d2", "d1"], "score": [1, 0, 2]})
    assert relevant_documents(labels) == {"q1": {"d1"}, "q2": {"d1"}}


def test_the_margin_skips_a_document_scoring_above_the_positive_times_one_minus_margin():
    # Positive 0.8, margin 0.1: the ceiling is 0.72. 0.75 and 0.7201 are skipped, 0.72 is not.
    scores = np.array([[0.8, 0.75, 0.7201, 0.72, 0.3]])
    chosen = choose_negatives(scores, np.array([0.8]), [{0}], range_min=0, relative_margin=0.1)
    assert chosen.indices == [3] and chosen.skipped_margin == 2 and chosen.skipped_relevant == 1
    # Margin 0: anything scoring above the positive is skipped, anything below it can be a negative.
    chosen = choose_negatives(np.array([[0.9, 0.8, 0.79]]), np.array([0.8]), [{1}], range_min=0, relative_margin=0.0)
    assert chosen.indices == [2] and chosen.skipped_margin == 1
    # A negative positive score: the margin is relative to its magnitude, still below the positive.
    chosen = choose_negatives(
        np.array([[-0.1, -0.2, -0.25]]), np.array([-0.2]), [{1}], range_min=0, relative_margin=0.2
    )
    assert chosen.indices == [2]


def test_range_min_skips_the_top_ranks_and_a_pair_no_candidate_passes_for_gets_none():
    scores = np.array([[0.5, 0.4, 0.3, 0.2], [0.9, 0.95, 0.99, 0.98]])
    chosen = choose_negatives(scores, np.array([1.0, 0.5]), [set(), set()], range_min=2, relative_margin=0.0)
    # Row 0: ranks 0, 1 (docs 0, 1) skipped -> doc 2. Row 1: ranks 0, 1 skipped, the other two score above
    # its positive.
    assert chosen.indices == [2, None] and chosen.found == 1
    assert (chosen.skipped_rank, chosen.skipped_margin) == (4, 2)


def test_mining_keeps_every_pair_in_order_and_a_pair_without_a_hard_negative_gets_a_random_one(caplog):
    ids = ["d1", "d2", "d3"]
    scores = {"d1": 0.5, "d2": 0.9, "d3": 0.2}
    labels = pd.DataFrame({"query-id": ["q1", "q2"], "corpus-id": ["d1", "d2"], "score": [1, 1]})
    model = FakeModel(_vectors(ids, scores, ["q1", "q2"]))
    mined = mine_hard_negatives(
        _pairs([("q1", "d1"), ("q2", "d2")]), _corpus(ids), labels, model, PROMPTS, range_min=0, relative_margin=0.1
    )
    # q1 (positive 0.5, ceiling 0.45): d2 (0.9) too close, d3 (0.2) taken. q2 and q1 share the query vector
    # here, so q2 (positive 0.9, ceiling 0.81) takes d1 (0.5).
    assert mined["anchor"].tolist() == PROMPTS.format_queries(["query q1", "query q2"])
    assert mined["negative"].tolist() == PROMPTS.format_documents(["text of d3", "text of d1"], ["", ""])
    strict = mine_hard_negatives(
        _pairs([("q1", "d1")]), _corpus(ids), labels, model, PROMPTS, range_min=2, relative_margin=0.1
    )
    assert strict["negative"].tolist() == PROMPTS.format_documents(["text of d3"], [""])  # rank 2 still passes
    # range_min 3: no candidate passes for q1; the pair stays, with a random document not relevant to q1.
    with caplog.at_level("INFO", logger="embedpipe.fine_tune"):
        drawn = [
            mine_hard_negatives(
                _pairs([("q1", "d1")]), _corpus(ids), labels, model, PROMPTS, range_min=3, relative_margin=0.1, seed=s
            )
            for s in range(20)
        ]
    assert all(len(m) == 1 and m["anchor"].tolist() == PROMPTS.format_queries(["query q1"]) for m in drawn)
    negatives = {m["negative"].iloc[0] for m in drawn}
    assert negatives == set(PROMPTS.format_documents(["text of d2", "text of d3"], ["", ""]))  # never d1
    assert "0 of 1 pairs got a hard negative" in caplog.text and "1 a random one" in caplog.text
    again = mine_hard_negatives(
        _pairs([("q1", "d1")]), _corpus(ids), labels, model, PROMPTS, range_min=3, relative_margin=0.1, seed=7
    )
    assert again.equals(drawn[7])  # seeded


def test_a_pair_whose_query_every_document_is_relevant_to_is_the_only_one_left_out():
    indices = [None, 5, None]
    filled = fill_random_negatives(indices, [{0, 1}, {0}, {0, 1, 2}], documents=3, seed=0)
    assert filled == 1 and indices[0] == 2 and indices[1] == 5 and indices[2] is None


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(hard_negative_range_min=-1), "hard_negative_range_min"),
        (dict(hard_negative_margin=1.0), "hard_negative_margin"),
        (dict(hard_negative_margin=-0.1), "hard_negative_margin"),
        (dict(guided_loss=True, symmetric_loss=True), "cannot be combined"),
    ],
)
def test_bad_negative_settings_fail(change, message):
    with pytest.raises(FineTuneError, match=message):
        FineTuneSettings(**change)


def test_two_positives_of_one_query_never_share_a_batch(tmp_path):
    from datasets import Dataset
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    args = training_arguments(FineTuneSettings(train_steps=2), tmp_path, "cpu", "fp32", validation=False)
    assert args.batch_sampler == batch_sampler() == BatchSamplers.NO_DUPLICATES
    # 12 queries; query 0 and query 1 have three positives each: anchors repeat.
    rows = [(f"q{q}", f"d{q}-{k}") for q in range(12) for k in range(3 if q < 2 else 1)]
    dataset = Dataset.from_dict({"anchor": [q for q, _ in rows], "positive": [d for _, d in rows]})
    for seed in range(5):
        sampler = NoDuplicatesBatchSampler(dataset, batch_size=4, drop_last=False, seed=seed)
        batches = [[rows[i][0] for i in batch] for batch in sampler]
        assert sorted(i for batch in sampler for i in batch) == list(range(len(rows)))  # every pair, once
        assert all(len(set(anchors)) == len(anchors) for anchors in batches), batches


@pytest.fixture(scope="module")
def model():
    from sentence_transformers import SentenceTransformer

    from embedpipe.models import packaged_model_path

    return SentenceTransformer(str(packaged_model_path()), device="cpu")


def test_the_loss_each_setting_builds(model):
    from sentence_transformers.sentence_transformer import losses

    plain = ranking_loss(model, FineTuneSettings())
    assert type(plain) is losses.MultipleNegativesRankingLoss and plain.directions == ("query_to_doc",)

    symmetric = ranking_loss(model, FineTuneSettings(symmetric_loss=True))
    assert type(symmetric) is losses.MultipleNegativesRankingLoss
    assert symmetric.directions == ("query_to_doc", "doc_to_query") and symmetric.partition_mode == "per_direction"

    cached_symmetric = ranking_loss(model, FineTuneSettings(symmetric_loss=True, batch_size=128))
    assert type(cached_symmetric) is losses.CachedMultipleNegativesRankingLoss
    assert cached_symmetric.directions == ("query_to_doc", "doc_to_query")

    guided = ranking_loss(model, FineTuneSettings(guided_loss=True))
    assert type(guided) is losses.GISTEmbedLoss and guided.temperature == pytest.approx(0.05)
    assert guided.guide is not model and not any(p.requires_grad for p in guided.guide.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the model itself still trains
    texts = ["a short query", "another text"]
    assert np.allclose(guided.guide.encode(texts), model.encode(texts), atol=1e-6)  # a copy of the base

    cached_guided = ranking_loss(model, FineTuneSettings(guided_loss=True, cached_loss=True))
    assert type(cached_guided) is losses.CachedGISTEmbedLoss

    wrapped = build_loss(model, FineTuneSettings(guided_loss=True), 384, 128)
    assert wrapped.name == "MatryoshkaLoss(GISTEmbedLoss)" and wrapped.dims == [384, 192, 128]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, str]:
    from tests.conftest import prepare_short_scifact_mini

    return prepare_short_scifact_mini(tmp_path_factory.mktemp("prepared"))


@pytest.mark.parametrize(
    "options, loss",
    [
        (dict(guided_loss=True, mine_hard_negatives=True, hard_negative_range_min=1), "GISTEmbedLoss"),
        (dict(symmetric_loss=True), "MultipleNegativesRankingLoss"),
    ],
)
def test_a_run_trains_with_the_negatives_it_was_given(prepared, tmp_path, options, loss):
    from embedpipe.fine_tune import fine_tune

    result = fine_tune(
        **prepared, output_dir=str(tmp_path / "out"), batch_size=8, train_steps=2, max_seq_length=48, **options
    )
    assert result.metadata["loss"] == loss
    for name, value in options.items():
        assert result.metadata["hard_negatives" if name == "mine_hard_negatives" else name] == value
    assert result.metrics["train_loss"] > 0


def test_the_fine_tune_command_sets_the_negatives_options():
    from embedpipe.cli import build_parser
    from embedpipe.cli.data import fine_tune_settings

    parser = build_parser(["fine-tune"])
    default = fine_tune_settings(parser.parse_args(["fine-tune"]))
    plain = FineTuneSettings()
    assert (default.hard_negative_range_min, default.hard_negative_margin) == (
        plain.hard_negative_range_min,
        plain.hard_negative_margin,
    )
    assert not default.guided_loss and not default.symmetric_loss and not default.mine_hard_negatives
    given = fine_tune_settings(
        parser.parse_args(
            "fine-tune --hard-negatives --hard-negative-range-min 3 --hard-negative-margin 0.2 --guided-loss".split()
        )
    )
    assert given.mine_hard_negatives and given.guided_loss and not given.symmetric_loss
    assert (given.hard_negative_range_min, given.hard_negative_margin) == (3, 0.2)
    assert fine_tune_settings(parser.parse_args(["fine-tune", "--symmetric-loss"])).symmetric_loss
    with pytest.raises(FineTuneError, match="hard_negative_margin"):
        fine_tune_settings(parser.parse_args(["fine-tune", "--hard-negative-margin", "1.5"]))
