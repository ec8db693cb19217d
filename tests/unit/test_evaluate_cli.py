"""`embedpipe evaluate` on a BEIR folder that has only test labels."""

import pandas as pd

from embedpipe.cli import main


def test_evaluate_command_on_a_folder_with_only_test_labels(tmp_path, tiny_example_data, capsys):
    data = tiny_example_data
    (data / "qrels" / "train.tsv").unlink()
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(data), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ndcg@10" in printed and "no tuned model given" in printed
    table = pd.read_parquet(out / "per_query.parquet")
    assert table["query-id"].nunique() == 4 and set(table["model"]) == {"base"}
    assert (out / "runs" / "test.base.trec").is_file() and (out / "report.html").is_file()
    assert (out / "corpus_embeddings" / "base.parquet").is_file()


def test_fine_tune_command_writes_the_model_and_its_training_report(tmp_path, tiny_example_data, capsys):
    out = tmp_path / "tuned"
    argv = ["fine-tune", "--data", str(tiny_example_data), "--output-dir", str(out), "--train-steps", "2"]
    assert main([*argv, "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"training report: {out / 'report.html'}" in printed
    report = (out / "report.html").read_text()
    assert "<svg" in report and "loss" in report.lower()
    assert (out / "model" / "config.json").is_file()
