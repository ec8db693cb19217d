"""Library tier with the packaged MiniLM: the Beam embedding job on small slices (Beam's local runner)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedpipe.embed.job import TooManyDeadLetters, prepare_config, run_job
from embedpipe.embed.settings import DeadLetterLimits, ModelSettings
from embedpipe.models import ModelLoadError, load_model

pytestmark = pytest.mark.slow

MINI = Path(__file__).resolve().parents[2] / "examples" / "scifact-mini" / "corpus.jsonl"


@pytest.fixture(scope="module")
def model():
    return load_model("default", device="cpu")


def slice_of_corpus(path: Path, n: int, start: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in MINI.read_text().splitlines()[start : start + n]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_vectors(folder) -> pd.DataFrame:
    return pd.read_parquet(folder).set_index("id")


def encode(model, texts):
    return model.encode(texts, prompt="", normalize_embeddings=True, batch_size=32)


def test_one_vector_per_document_equal_to_sentence_transformers(tmp_path, model):
    rows = slice_of_corpus(tmp_path / "corpus.jsonl", 12)
    result = run_job(
        prepare_config(
            str(tmp_path / "corpus.jsonl"),
            str(tmp_path / "out"),
            model=ModelSettings(batch_size=4, inference_batch_size=8),
        )
    )
    vectors = read_vectors(tmp_path / "out")
    assert sorted(vectors.index) == sorted(r["_id"] for r in rows)
    expected = encode(model, [f"{r['title']} {r['text']}" for r in rows])  # MiniLM's document prompt
    got = np.stack(vectors.loc[[r["_id"] for r in rows], "embedding"].to_list())
    assert got.dtype == np.float32 and got.shape == (12, 384)
    assert (got * expected).sum(axis=1).min() > 0.9999
    first = vectors.loc[rows[0]["_id"]]
    assert first["content"] == rows[0]["text"] and json.loads(first["metadata"])["title"] == rows[0]["title"]
    m = result.metrics
    assert (m["documents_read"], m["documents_embedded"], m["chunks_embedded"], m["dead_letters"]) == (12, 12, 12, 0)
    assert m["documents_per_second"] > 0


def test_prepared_parquet_input_and_output_dimensionality(tmp_path, model):
    rows = slice_of_corpus(tmp_path / "corpus.jsonl", 5)
    frame = pd.DataFrame(
        {
            "_id": [r["_id"] for r in rows],
            "title": [r["title"] for r in rows],
            "text": [r["text"] for r in rows],
            "metadata": ['{"source": "test"}'] * 5,
        }
    )
    frame.to_parquet(tmp_path / "corpus")  # as prepare_data writes its artifact: no extension
    run_job(
        prepare_config(str(tmp_path / "corpus"), str(tmp_path / "out"), model=ModelSettings(output_dimensionality=128))
    )
    vectors = read_vectors(tmp_path / "out")
    got = np.stack(vectors.loc[frame["_id"], "embedding"].to_list())
    assert got.shape == (5, 128) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    full = encode(model, [f"{r['title']} {r['text']}" for r in rows])[:, :128]
    expected = full / np.linalg.norm(full, axis=1, keepdims=True)
    assert (got * expected).sum(axis=1).min() > 0.9999
    assert json.loads(vectors["metadata"].iloc[0])["source"] == "test"


def test_chunks_have_ids_overlap_and_their_own_vectors(tmp_path, model):
    rows = slice_of_corpus(tmp_path / "corpus.jsonl", 3)
    run_job(prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "out"), chunk_tokens=64, chunk_overlap=16))
    vectors = read_vectors(tmp_path / "out")
    tokenizer = model.tokenizer
    for row in rows:
        chunks = vectors[[json.loads(m)["document_id"] == row["_id"] for m in vectors["metadata"]]]
        offsets = tokenizer(row["text"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        assert len(offsets) > 64  # every test document is long enough for several chunks
        starts = list(range(0, len(offsets) - 16, 48))  # windows of 64 tokens, each 48 after the one before
        assert sorted(chunks.index) == sorted(f"{row['_id']}#{i}" for i in range(len(starts)))
        texts = [chunks.loc[f"{row['_id']}#{i}", "content"] for i in range(len(starts))]
        for i, start in enumerate(starts):
            end = min(start + 64, len(offsets))
            assert texts[i] == row["text"][offsets[start][0] : offsets[end - 1][1]]
            assert json.loads(chunks.loc[f"{row['_id']}#{i}", "metadata"])["chunk"] == i
        assert row["text"].startswith(texts[0]) and row["text"].endswith(texts[-1])
        # neighbours share the text of exactly chunk_overlap (16) tokens
        for i in range(len(starts) - 1):
            shared = row["text"][offsets[starts[i + 1]][0] : offsets[starts[i + 1] + 15][1]]
            assert texts[i].endswith(shared) and texts[i + 1].startswith(shared)
        got = np.stack(chunks.loc[[f"{row['_id']}#{i}" for i in range(len(starts))], "embedding"].to_list())
        expected = encode(model, [f"{row['title']} {t}" for t in texts])
        assert (got * expected).sum(axis=1).min() > 0.9999


def test_incremental_run_embeds_only_changed_and_new_documents(tmp_path):
    rows = slice_of_corpus(tmp_path / "corpus.jsonl", 10)
    first = run_job(prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "run1")))
    assert first.metrics["documents_embedded"] == 10
    rows[0]["text"] += " Changed."
    rows[1]["title"] = "A new title"
    removed = rows.pop(2)
    rows.append({"_id": "new-doc", "title": "", "text": "A document that was not there before."})
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    second = run_job(
        prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "run2"), previous=str(tmp_path / "run1"))
    )
    m = second.metrics
    assert (m["documents_embedded"], m["documents_reused"], m["documents_removed"]) == (3, 7, 1)
    before, after = read_vectors(tmp_path / "run1"), read_vectors(tmp_path / "run2")
    assert sorted(after.index) == sorted(r["_id"] for r in rows) and removed["_id"] not in after.index
    unchanged = rows[3]["_id"]
    assert after.loc[unchanged, "content_hash"] == before.loc[unchanged, "content_hash"]
    assert after.loc[unchanged, "embedding"].tolist() == before.loc[unchanged, "embedding"].tolist()
    for changed in (rows[0]["_id"], rows[1]["_id"]):
        assert after.loc[changed, "content_hash"] != before.loc[changed, "content_hash"]
        assert not np.allclose(after.loc[changed, "embedding"], before.loc[changed, "embedding"])

    # Another model identity (here: another output size) re-embeds everything.
    third = run_job(
        prepare_config(
            str(tmp_path / "corpus.jsonl"),
            str(tmp_path / "run3"),
            previous=str(tmp_path / "run2"),
            model=ModelSettings(output_dimensionality=64),
        )
    )
    assert (third.metrics["documents_embedded"], third.metrics["documents_reused"]) == (10, 0)


def test_bad_documents_are_counted_dead_letters_never_silently_dropped(tmp_path):
    good = slice_of_corpus(tmp_path / "good.jsonl", 3)
    lines = [json.dumps(r) for r in good] + [
        json.dumps({"_id": "empty", "text": "  "}),
        json.dumps({"title": "no id", "text": "x"}),
        "{not json",
        json.dumps({"_id": "twice", "text": "first copy"}),
        json.dumps({"_id": "twice", "text": "second copy"}),
        "",
    ]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    # 5 of 8 records are dead letters: over the default limit (10 %), which this test lifts to see them all.
    limits = DeadLetterLimits(max_dead_letter_share=1.0)
    result = run_job(prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "out"), dead_letters=limits))
    assert result.metrics["dead_letters"] == 5 and result.metrics["documents_embedded"] == 3
    assert result.metrics["documents_read"] == 8
    assert sorted(read_vectors(tmp_path / "out").index) == sorted(r["_id"] for r in good)
    dead = [
        json.loads(line)
        for f in (tmp_path / "out" / "_dead_letters").glob("*.jsonl")
        for line in f.read_text().splitlines()
    ]
    reasons = sorted(d["reason"].split(";")[0] for d in dead)
    assert reasons == [
        "field '_id' is missing or not a non-empty string",
        "field 'text' is empty",
        "id 'twice' appears 2 times in the corpus",
        "id 'twice' appears 2 times in the corpus",
        "invalid JSON: Expecting property name enclosed in double quotes at column 2",
    ]
    sources = {d["reason"].split(":")[0]: d.get("source", "") for d in dead}
    assert sources["invalid JSON"] == f"{tmp_path / 'corpus.jsonl'}:6"  # read line by line: file and line named


def test_too_many_dead_letters_fail_the_job_after_it_ran_with_the_counts_and_write_no_vectors(tmp_path):
    good = slice_of_corpus(tmp_path / "good.jsonl", 6)
    lines = [json.dumps(r).encode() for r in good[:3]]
    lines += ['{"_id": "latin1", "text": "caf\xe9"}'.encode("latin-1"), b"", b"{broken"]  # lines 4, 5 (blank), 6
    lines += [json.dumps(r).encode() for r in good[3:]]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    config = prepare_config(
        str(corpus), str(tmp_path / "out"), dead_letters=DeadLetterLimits(max_dead_letter_share=0.2)
    )
    with pytest.raises(TooManyDeadLetters) as failed:
        run_job(config)
    message = str(failed.value)
    assert "2 of 8 records read (25.0%) are dead letters, over max_dead_letter_share 0.2" in message
    assert "no vectors were written" in message and "_dead_letters" in message
    assert (failed.value.metrics["documents_read"], failed.value.metrics["dead_letters"]) == (8, 2)
    out = tmp_path / "out"
    assert not list(out.glob("vectors*"))  # nothing that could be read as the job's (complete) output
    dead = {
        json.loads(line)["source"]: json.loads(line)["reason"]
        for f in (out / "_dead_letters").glob("*.jsonl")
        for line in f.read_text().splitlines()
    }
    assert sorted(dead) == [f"{corpus}:4", f"{corpus}:6"]
    assert dead[f"{corpus}:4"].startswith(f"{corpus}:4: not valid UTF-8 (") and "byte 0xe9" in dead[f"{corpus}:4"]
    # Within the limits the same corpus is embedded, the bad lines still dead letters.
    result = run_job(
        prepare_config(str(corpus), str(tmp_path / "out2"), dead_letters=DeadLetterLimits(max_dead_letter_share=0.25))
    )
    assert (result.metrics["documents_embedded"], result.metrics["dead_letters"]) == (6, 2)
    assert sorted(read_vectors(tmp_path / "out2").index) == sorted(r["_id"] for r in good)


def test_a_model_folder_that_does_not_load_is_a_clear_error(tmp_path):
    slice_of_corpus(tmp_path / "corpus.jsonl", 2)
    with pytest.raises(ModelLoadError, match="neither modules.json nor config.json"):
        prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "out"), model=str(tmp_path))
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')  # no weights, no tokenizer
    config = prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "out"), model=str(broken))
    with pytest.raises(ModelLoadError, match="could not load model"):
        run_job(config)
    assert not list((tmp_path / "out").glob("vectors-*.parquet"))


def test_an_output_dimensionality_above_the_model_s_is_an_error(tmp_path):
    slice_of_corpus(tmp_path / "corpus.jsonl", 2)
    with pytest.raises(ModelLoadError, match="larger than model 'default'"):
        run_job(
            prepare_config(
                str(tmp_path / "corpus.jsonl"), str(tmp_path / "out"), model=ModelSettings(output_dimensionality=1024)
            )
        )


def test_job_writes_into_the_vector_store_and_deletes_stale_rows(tmp_path, pg_uri):
    import psycopg

    def stored(table):
        with psycopg.connect(pg_uri) as conn:
            return dict(conn.execute(f'SELECT id, content FROM "{table}"').fetchall())

    rows = slice_of_corpus(tmp_path / "corpus.jsonl", 4)
    config = dict(database_uri=pg_uri, table="embed_job_test", chunk_tokens=96, chunk_overlap=16)
    run_job(prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "run1"), **config))
    first = read_vectors(tmp_path / "run1")
    assert stored("embed_job_test") == first["content"].to_dict()

    shortened, removed = rows[0], rows.pop(1)
    shortened["text"] = " ".join(shortened["text"].split()[:20])  # now one chunk instead of several
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_job(
        prepare_config(
            str(tmp_path / "corpus.jsonl"), str(tmp_path / "run2"), previous=str(tmp_path / "run1"), **config
        )
    )
    second = read_vectors(tmp_path / "run2")
    in_database = stored("embed_job_test")
    assert in_database == second["content"].to_dict()  # the table holds exactly this run's rows
    assert not any(i.startswith((removed["_id"] + "#", shortened["_id"] + "#1")) for i in in_database)


def test_over_the_dead_letter_limits_the_database_is_left_as_it_was(tmp_path, pg_uri):
    import psycopg

    def stored():
        with psycopg.connect(pg_uri) as conn:
            return dict(conn.execute('SELECT id, content FROM "embed_job_limits"').fetchall())

    rows = slice_of_corpus(tmp_path / "corpus.jsonl", 4)
    config = dict(database_uri=pg_uri, table="embed_job_limits")
    run_job(prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "run1"), **config))
    before = stored()
    assert sorted(before) == sorted(r["_id"] for r in rows)
    changed = [dict(rows[0], text="an edited text"), *rows[2:]]  # one edited, one removed, and 2 bad lines
    lines = [json.dumps(r) for r in changed] + ["{broken", json.dumps({"_id": "no text"})]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(TooManyDeadLetters, match="2 of 5 records read"):
        run_job(
            prepare_config(
                str(tmp_path / "corpus.jsonl"), str(tmp_path / "run2"), previous=str(tmp_path / "run1"), **config
            )
        )
    assert stored() == before  # no upsert of the edited document, no delete of the removed one
