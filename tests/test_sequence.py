"""The addition lesson: generated sums, their encoding and splits, the sequence module's loss and metrics against
direct computations, and the preset's training run (99 % of answers exactly right)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.data.preparing import preprocess_dataset
from pipeline.data.processed import load_split, read_meta
from pipeline.data.sequences import AdditionSums, draw_sums
from pipeline.data.tokens import VOCABULARY, decode_ids, encode_text
from pipeline.errors import DataConfigError, DataFormatError
from pipeline.models.checkpoints import load_module
from pipeline.models.networks import seq2seq
from pipeline.models.sequence import ExactMatch, SequenceModule
from pipeline.tracking.loading import load_trained_model
from pipeline.train import train
from tests.conftest import make_cfg
from tests.test_own_data import _prepare, _train_and_evaluate


def test_sums_are_distinct_right_and_seeded():
    questions, answers = draw_sums(np.random.default_rng(3), digits=3, count=2000)
    pairs = [tuple(sorted(int(n) for n in q.split("+"))) for q in questions]
    assert len(set(pairs)) == 2000  # a+b and b+a are one sum
    assert all(int(answer) == sum(pair) for answer, pair in zip(answers, pairs, strict=True))
    assert max(len(q) for q in questions) == 7 and min(len(q) for q in questions) == 3
    assert draw_sums(np.random.default_rng(3), 3, 2000) == (questions, answers)


def test_more_sums_than_there_are_is_a_config_error():
    assert len(draw_sums(np.random.default_rng(0), digits=1, count=55)[0]) == 55  # every unordered pair of 0-9
    with pytest.raises(DataConfigError, match=r"source\.count=56"):
        draw_sums(np.random.default_rng(0), digits=1, count=56)


def test_encoding_pads_reverses_and_decodes_back():
    ids = encode_text(["12+345"], 7, reverse=True)
    assert "".join(VOCABULARY[i] for i in ids[0]) == " 543+21"
    assert decode_ids(ids, reverse=True) == ["12+345"]
    assert decode_ids(encode_text(["357"], 4)) == ["357"]


def test_preprocess_splits_no_sum_twice_and_records_the_vocabulary(tmp_path):
    source = AdditionSums(digits=2, count=1000, seed=1)
    source.fetch(tmp_path / "raw")
    split = {"val_size": 0.1, "test_size": 0.2, "seed": 0, "reverse_question": True}
    preprocess_dataset(source, "addition", "sequence", tmp_path / "raw", tmp_path / "out", split)
    meta = read_meta(tmp_path / "out")
    assert meta["class_names"] == list(VOCABULARY) and meta["input_shape"] == [5] and meta["output_length"] == 3
    seen: dict[str, set[tuple[int, ...]]] = {}
    for name in ("train", "val", "test"):
        x, y = load_split(tmp_path / "out", name)
        questions, answers = decode_ids(x, reverse=True), decode_ids(y)
        assert all(int(a) == sum(int(n) for n in q.split("+")) for q, a in zip(questions, answers, strict=True))
        seen[name] = {tuple(sorted(int(n) for n in q.split("+"))) for q in questions}
    assert [len(seen[s]) for s in ("train", "val", "test")] == [700, 100, 200]
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])


def test_exact_match_counts_whole_answers_over_uneven_batches():
    metric = ExactMatch()
    target = torch.tensor([[1, 2, 3], [1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 0]])
    predicted = target.clone()
    predicted[1, 2] = 0  # one wrong character: the answer is wrong
    predicted[3, 0] = 1
    logits = nn.functional.one_hot(predicted, 12).float().transpose(1, 2)
    metric.update(logits[:3], target[:3])
    metric.update(logits[3:], target[3:])  # a partial last batch counts per answer, not per batch
    assert float(metric.compute()) == pytest.approx(3 / 5)


def test_the_module_takes_cross_entropy_over_every_answer_character():
    module = SequenceModule(
        num_classes=12, output_length=4, net=seq2seq, input_shape=[7], optimizer=None, scheduler=None
    )
    x = torch.from_numpy(encode_text(["1+2", "30+4"], 7, reverse=True))
    y = torch.from_numpy(encode_text(["3", "34"], 4))
    logits = module(x)
    assert logits.shape == (2, 4, 12)
    loss = module.model_step((x, y), "train").detach()
    direct = nn.functional.cross_entropy(logits.reshape(-1, 12), y.reshape(-1)).detach()
    assert float(loss) == pytest.approx(float(direct), rel=1e-6)
    metrics = module.train_metrics.compute()
    right = (logits.argmax(-1) == y).float()
    assert float(metrics["train/char_acc"]) == pytest.approx(float(right.mean()))
    assert float(metrics["train/exact_match"]) == pytest.approx(float(right.prod(dim=1).mean()))


@pytest.mark.parametrize("experiment", ["addition_rnn", "mnist_antirectifier", "auto_mpg_mlp", "cifar10_cnn"])
def test_the_new_presets_run_a_fast_dev_run(processed, tmp_path, experiment):
    train(make_cfg(processed, tmp_path, f"experiment={experiment}", "debug=fast_dev_run", "callbacks=no_figures"))


@pytest.mark.slow
def test_the_addition_rnn_answers_99_percent_of_test_sums_exactly(tmp_path):
    paths = _prepare(tmp_path, "data=addition")
    metrics = _train_and_evaluate(tmp_path, paths, "experiment=addition_rnn")
    x, y = load_split(tmp_path / "processed/addition", "test")
    model = load_trained_model(str(tmp_path / "model.ckpt"))
    questions = np.asarray(decode_ids(x, reverse=True), dtype=object)
    exact = float(np.mean(model.predict(questions) == np.asarray(decode_ids(y))))
    assert metrics["test/exact_match"] == pytest.approx(exact, abs=1e-6)
    assert exact >= 0.99, json.dumps(metrics)


def test_the_answers_figure_is_drawn_at_test_end(processed, tmp_path):
    from pipeline.callbacks.drawing import answered_questions

    figure = answered_questions(["1+2", "30+4"], ["3", "34"], ["3", "35"])
    assert figure.axes[0].get_title() == "test questions: 1 of 2 right"
    train(make_cfg(processed, tmp_path, "experiment=addition_rnn", "debug=fast_dev_run"))
    assert (tmp_path / "run/figures/answers.png").stat().st_size > 0


def _answers_of(checkpoint, questions: list[str]) -> list[str]:
    """The checkpoint's network run directly: questions encoded by hand (reversed, as the preset does)."""
    module = load_module(checkpoint)[0].eval()
    with torch.no_grad():
        ids = module(torch.from_numpy(encode_text(questions, 7, reverse=True))).argmax(dim=-1)
    return decode_ids(ids.numpy())


@pytest.fixture
def addition_run(processed, tmp_path, mlflow_store):
    """A 2-epoch addition model logged to an MLflow store and registered as ``adder``: (checkpoint, run id)."""
    from tests.conftest import only_run

    checkpoint = tmp_path / "model.ckpt"
    overrides = ["experiment=addition_rnn", "scheduler=none", "trainer.max_epochs=2", "logger=mlflow"]
    overrides += ["logger.mlflow.registered_model_name=adder", "callbacks=no_figures", f"model_file={checkpoint}"]
    train(make_cfg(processed, tmp_path, *overrides))
    return checkpoint, only_run(mlflow_store, "addition_rnn").info.run_id


def test_predict_answers_questions_as_text_from_the_checkpoint_and_the_logged_model(
    addition_run, tmp_path, mlflow_store
):
    from tests.test_predict import run_predict

    checkpoint, run_id = addition_run
    questions = tmp_path / "questions.txt"
    questions.write_text("12+345\n7+8\n\n999+1\n")
    expected = _answers_of(checkpoint, ["12+345", "7+8", "999+1"])
    for uri in (str(checkpoint), f"runs:/{run_id}/model", "models:/adder@champion"):
        out = run_predict({"store": mlflow_store}, uri, questions, tmp_path / "answers.csv")
        assert out["question"].tolist() == ["12+345", "7+8", "999+1"]
        assert out["prediction"].fillna("").astype(str).tolist() == expected
    (tmp_path / "bad.txt").write_text("12*3\n")
    with pytest.raises(DataFormatError, match=r"bad.txt, line 1: '12\*3' is not a question the model reads"):
        run_predict({"store": mlflow_store}, str(checkpoint), tmp_path / "bad.txt", tmp_path / "answers.csv")


def test_the_logged_model_takes_and_returns_text(addition_run, mlflow_store, monkeypatch):
    import mlflow

    checkpoint, run_id = addition_run
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert model.predict(["12+345", "7+8"]) == _answers_of(checkpoint, ["12+345", "7+8"])
    schema = model.metadata.get_input_schema().to_dict()
    assert schema == [{"type": "string", "required": True}], schema  # a list of strings, from the type hints
    assert model.metadata.metadata["output"] == "text"
    with pytest.raises(Exception, match=r"'12\*3': longer than 7 characters or not made of"):
        model.predict(["12*3"])


@pytest.mark.slow
def test_mlflow_serves_the_adder_over_http(addition_run, mlflow_store, tmp_path):
    """`mlflow models serve -m models:/adder@champion` answers questions sent as JSON text with text."""
    import os
    import sys
    import urllib.request
    from pathlib import Path

    from tests.servers import free_port, serving

    checkpoint, _ = addition_run
    port, bin_dir = free_port(), Path(sys.executable).parent
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", "models:/adder@champion", "--env-manager", "local"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    address = ["-h", "127.0.0.1", "-p", str(port)]
    with serving([*command, *address], f"http://127.0.0.1:{port}", tmp_path, env, "/ping") as url:
        body = json.dumps({"inputs": ["12+345", "7+8"]}).encode()
        request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answers = json.loads(response.read())["predictions"]
    assert answers == _answers_of(checkpoint, ["12+345", "7+8"])


def test_a_one_cycle_schedule_over_too_few_steps_is_refused_clearly(processed, tmp_path):
    from pipeline.errors import ModelConfigError

    # 300 training sums in batches of 256: 2 steps an epoch, 4 in all; a 25 % warm-up is a single step
    cfg = make_cfg(processed, tmp_path, "experiment=addition_rnn", "trainer.max_epochs=2", "callbacks=no_figures")
    with pytest.raises(ModelConfigError, match=r"one-cycle schedule over this run's 4 optimizer step\(s\)"):
        train(cfg)


def test_the_feedback_decoder_reads_its_own_guesses_or_with_teacher_forcing_the_truth():
    torch.manual_seed(0)
    net = seq2seq([7], 12, output_length=4, width=16, decoder="feedback")
    x = torch.from_numpy(encode_text(["1+2", "30+4", "999+1"], 7, reverse=True))
    y = torch.from_numpy(encode_text(["3", "34", "1000"], 4))
    with torch.no_grad():
        _, state = net.encoder(nn.functional.one_hot(x, 12).float())
        # teacher forcing: the decoder reads nothing, then the true characters, in one pass
        truth = torch.cat([torch.zeros(3, 1, 12), nn.functional.one_hot(y[:, :-1], 12).float()], dim=1)
        forced = net.head(net.decoder(truth, state)[0])
        torch.testing.assert_close(net(x, targets=y, teacher_forcing=1.0), forced)
        # without: each step reads the character the step before chose
        previous, steps, own = torch.zeros(3, 1, 12), [], state
        for _ in range(4):
            out, own = net.decoder(previous, own)
            steps.append(net.head(out))
            previous = nn.functional.one_hot(steps[-1].argmax(-1), 12).float()
        torch.testing.assert_close(net(x), torch.cat(steps, dim=1))
        torch.testing.assert_close(net(x, targets=y, teacher_forcing=0.0), net(x))


def test_teacher_forcing_needs_the_feedback_decoder(processed, tmp_path):
    from pipeline.errors import ModelConfigError

    with pytest.raises(ModelConfigError, match=r"model.teacher_forcing=0.5 feeds .* set model.net.decoder=feedback"):
        SequenceModule(12, 4, seq2seq, teacher_forcing=0.5, input_shape=[7], optimizer=None)
    with pytest.raises(ModelConfigError, match=r"model.teacher_forcing=1.5: expected a probability in \[0, 1\]"):
        SequenceModule(12, 4, seq2seq, teacher_forcing=1.5, input_shape=[7], optimizer=None)
    from pipeline.models.networks import Seq2Seq

    calls: list[tuple[bool, float]] = []
    forward = Seq2Seq.forward

    def spy(self, ids, targets=None, teacher_forcing=0.0):
        calls.append((targets is not None, teacher_forcing))
        return forward(self, ids, targets, teacher_forcing)

    overrides = ["model.net.decoder=feedback", "model.teacher_forcing=0.5", "scheduler=none", "trainer.max_epochs=1"]
    cfg = make_cfg(processed, tmp_path, "experiment=addition_rnn", *overrides, "callbacks=no_figures")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Seq2Seq, "forward", spy)
        train(cfg)
    # 300 training sums in batches of 256: 2 forced steps; every check, validation and test call feeds back
    assert calls.count((True, 0.5)) == 2 and {c for c in calls if c != (True, 0.5)} == {(False, 0.0)}
