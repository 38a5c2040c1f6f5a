"""Plain ``nn.Module`` builders. Each takes the dataset's ``input_shape`` and ``num_outputs``
(filled in by the LightningModule from the datamodule), so a config names only what a
user chooses: layer sizes, activations, degree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.errors import ModelConfigError


class Antirectifier(nn.Module):
    """Keras' antirectifier example layer: centre the features, L2-normalise them, then output ReLU(x) and
    ReLU(-x) side by side. Where ReLU drops the negative half of every feature, this keeps both halves
    (so nothing is lost) and is twice as wide: ``width_factor`` tells the builder the next layer's input."""

    width_factor = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        unit = torch.nn.functional.normalize(centred, p=2.0, dim=1)
        return torch.cat([torch.relu(unit), torch.relu(-unit)], dim=1)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "antirectifier": Antirectifier,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _flat_size(input_shape: Sequence[int]) -> int:
    size = 1
    for d in input_shape:
        size *= int(d)
    return size


def mlp(
    input_shape: Sequence[int],
    num_outputs: int,
    hidden: Sequence[int] = (100,),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """Flatten → (Linear → activation [→ dropout]) per hidden size → Linear. ``hidden=[]`` is a linear model;
    an activation that widens its input (the antirectifier doubles it) widens the next layer's input."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = _flat_size(input_shape)
    for size in hidden:
        act = _activation(activation)
        layers += [nn.Linear(width, size), act]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size * int(getattr(act, "width_factor", 1))
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


def linear(input_shape: Sequence[int], num_outputs: int) -> nn.Sequential:
    """A single affine layer: linear regression, or logistic/softmax regression with the matching loss."""
    return mlp(input_shape, num_outputs, hidden=())


class PolynomialFeatures(nn.Module):
    """Maps each feature x to x, x², …, x^degree (no cross terms), so a linear layer fits a polynomial."""

    def __init__(self, degree: int) -> None:
        super().__init__()
        if degree < 1:
            raise ValueError(f"degree must be at least 1, got {degree}")
        self.degree = degree

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return torch.cat([x**k for k in range(1, self.degree + 1)], dim=1)


def polynomial(input_shape: Sequence[int], num_outputs: int, degree: int = 3) -> nn.Sequential:
    return nn.Sequential(PolynomialFeatures(degree), nn.Linear(_flat_size(input_shape) * degree, num_outputs))


def tiny_cnn(input_shape: Sequence[int], num_outputs: int) -> nn.Sequential:
    """The course's 4-conv network: Conv(5)→Conv(10)→Conv(10)→Conv(1), 3×3 valid, → Dense. 5,521 parameters on MNIST."""
    channels, height, width = input_shape
    convs: list[nn.Module] = []
    for c_in, c_out in ((channels, 5), (5, 10), (10, 10), (10, 1)):
        convs += [nn.Conv2d(c_in, c_out, kernel_size=3), nn.ReLU()]
    return nn.Sequential(*convs, nn.Flatten(), nn.Linear((height - 8) * (width - 8), num_outputs))


def lenet(input_shape: Sequence[int], num_outputs: int) -> nn.Sequential:
    """LeNet-5 style: two conv + max-pool blocks, then 120 → 84 → outputs."""
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 6, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_outputs),
    )


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def strong_cnn(
    input_shape: Sequence[int],
    num_outputs: int,
    width: int = 32,
    dropout: float = 0.25,
    convs: Sequence[int] = (2, 2, 1),
    pool: int = 1,
) -> nn.Sequential:
    """A compact VGG-style net (conv-BN-ReLU, max-pool) for accuracy, then an average-pooled linear head.

    Three stages of ``width``, ``2·width`` and ``4·width`` channels with ``convs[i]`` 3×3 convs
    each, max-pooled between stages. On a CPU most of the time goes to the full-resolution
    stage, so ``convs=[1, 2, 2]`` moves work to the pooled stages (more accuracy per second).
    The head sees the last stage average-pooled to ``pool``×``pool``: 1 is global pooling,
    larger keeps where in the image a feature was (it matters for clothes more than digits).
    """
    if len(convs) != 3 or min(convs) < 1 or pool < 1:
        raise ValueError(f"convs must be three counts >= 1 (one per stage) and pool >= 1, got {list(convs)}, {pool}")
    layers: list[nn.Module] = []
    c_in = input_shape[0]
    for stage, count in enumerate(convs):
        if stage:
            layers.append(nn.MaxPool2d(2))
        for _ in range(count):
            layers += _conv_block(c_in, width * 2**stage)
            c_in = width * 2**stage
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(pool),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(c_in * pool * pool, num_outputs),
    )


def keras_cnn(
    input_shape: Sequence[int], num_outputs: int, dropout: float = 0.25, dense: int = 512, head_dropout: float = 0.5
) -> nn.Sequential:
    """The CNN of Keras's CIFAR-10 example (keras/examples/cifar10_cnn.py), layer for layer, to compare against it.

    Two blocks of Conv(3×3, same) → Conv(3×3, valid), each with ReLU, then max-pool 2 and dropout;
    then Dense(``dense``) → ReLU → Dropout(``head_dropout``) → outputs. 1.25 M parameters on 3×32×32.
    """
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for c_in, c_out in ((channels, 32), (32, 64)):
        layers += [
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
        ]
        height, width = (height - 2) // 2, (width - 2) // 2  # the valid conv loses 2, the pool halves
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(_flat_size((64, height, width)), dense),
        nn.ReLU(),
        nn.Dropout(head_dropout),
        nn.Linear(dense, num_outputs),
    )


class Seq2Seq(nn.Module):
    """An encoder-decoder over one-hot characters: the encoder RNN reads the question; the decoder writes per-step
    logits over the vocabulary, ``(n, output_length, vocabulary)``.

    ``decoder="repeat"`` is Keras' addition_rnn: the encoder's last output, repeated once per answer
    step, is the decoder's every input. ``decoder="feedback"`` (Sutskever et al. 2014) starts the
    decoder from the encoder's final state and feeds it, at each step, the character written at
    the step before (its own best guess); given ``targets`` and ``teacher_forcing`` > 0 (training),
    each answer position is fed the true previous character instead with that probability (one draw per
    position and batch).
    """

    def __init__(
        self, vocabulary: int, output_length: int, hidden: int, layers: int, cell: str, decoder: str = "repeat"
    ) -> None:
        super().__init__()
        if cell not in RNN_CELLS:
            raise ValueError(f"cell {cell!r} is not one of {', '.join(RNN_CELLS)}")
        if decoder not in DECODERS:
            raise ModelConfigError(f"model.net.decoder={decoder!r}: expected one of {', '.join(DECODERS)}")
        self.vocabulary, self.output_length, self.feedback = vocabulary, output_length, decoder == "feedback"
        self.encoder = RNN_CELLS[cell](vocabulary, hidden, num_layers=layers, batch_first=True)
        step_input = vocabulary if self.feedback else hidden  # feedback: the previous character (zeros at first)
        self.decoder = RNN_CELLS[cell](step_input, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocabulary)

    def forward(
        self, ids: torch.Tensor, targets: torch.Tensor | None = None, teacher_forcing: float = 0.0
    ) -> torch.Tensor:
        outputs, state = self.encoder(nn.functional.one_hot(ids.long(), self.vocabulary).float())
        if not self.feedback:
            summary = outputs[:, -1:, :].expand(-1, self.output_length, -1)  # the question, once per answer step
            decoded, _ = self.decoder(summary)
            return self.head(decoded)
        previous = outputs.new_zeros(ids.shape[0], 1, self.vocabulary)
        steps = []
        for t in range(self.output_length):
            decoded, state = self.decoder(previous, state)
            logits = self.head(decoded)
            steps.append(logits)
            if targets is not None and teacher_forcing > 0 and float(torch.rand(())) < teacher_forcing:
                chosen = targets[:, t : t + 1]  # the true previous character
            else:
                chosen = logits.argmax(dim=-1)
            previous = nn.functional.one_hot(chosen, self.vocabulary).float()
        return torch.cat(steps, dim=1)


DECODERS = ("repeat", "feedback")
RNN_CELLS: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}


def seq2seq(
    input_shape: Sequence[int],
    num_outputs: int,
    output_length: int,
    width: int = 128,
    layers: int = 1,
    cell: str = "lstm",
    decoder: str = "repeat",
) -> Seq2Seq:
    """The addition lesson's encoder-decoder over ``num_outputs`` characters, ``width`` units per RNN layer
    (``input_shape`` is the question's length, which the encoder reads whatever it is)."""
    return Seq2Seq(num_outputs, output_length, width, layers, cell, decoder)
