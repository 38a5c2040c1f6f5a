"""GANs: the course's plain MLP GAN, DCGAN and the label-conditioned (ACGAN) variants, one LightningModule.

Two networks, two optimizers, so Lightning's manual optimisation: each batch takes one
discriminator step, then one generator step. Images arrive in [0, 1] (the experiments set
``data.datamodule.normalize: false``) and are mapped to the generator's tanh range [-1, 1].
Quality is scored at validation and test end by a classifier this pipeline trained
(``scorer_checkpoint``; see ``pipeline.models.gan_metrics``). ``sample_grid()`` draws the
fixed-noise grid; the ``GANProgress`` callback (``pipeline.callbacks.figures``) decides when
to draw it and where the frames go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torchvision.utils import save_image

from pipeline.atomic import atomic_open
from pipeline.errors import ModelConfigError
from pipeline.models.gan_metrics import ClassScores, FeatureStats, Scorer, frechet_distance
from pipeline.models.gan_networks import Discriminator, Generator
from pipeline.models.metrics import WeightedMean, log_step_values


class GANModule(L.LightningModule):
    """A generator and a discriminator trained against each other (non-saturating BCE losses).

    ``generator`` and ``discriminator`` are builders (Hydra ``_partial_: true``) called with
    the dataset's ``image_shape``, ``num_classes`` and ``conditional``; ``optimizer`` is one
    factory that builds both optimizers. With ``conditional: true`` the generator draws the
    label it is given, and the discriminator's auxiliary head, trained on the real images'
    labels, must read that label from the generated image (ACGAN; ``aux_weight`` weighs the
    class losses). ``aux_classifier: true`` gives an unconditional
    GAN's discriminator that head too, trained on the real images' labels only: its features
    then tell the digits apart, and a generated image that is no clear digit looks fake.

    ``latent_code: k`` (InfoGAN, unsupervised: no labels are used) adds a uniform k-way
    categorical code to the noise, and a discriminator head that must read the code back
    from the generated image; both networks minimise that head's cross-entropy. The generator
    then gives each code a visually distinct mode of its own (on MNIST, mostly one digit per
    code) instead of one continuous noise space in which the regions between digits draw
    images that are no digit at all.
    """

    task = "classification"  # trains on labelled image datasets
    family = "gan"
    fixed_noise: torch.Tensor  # buffers, registered in _fixed_inputs
    fixed_labels: torch.Tensor

    def __init__(
        self,
        generator: Callable[..., Generator],
        discriminator: Callable[..., Discriminator],
        input_shape: Sequence[int],
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        scheduler: Callable[..., Any] | None = None,
        latent_dim: int = 100,
        conditional: bool = False,
        aux_classifier: bool = False,
        aux_weight: float = 1.0,
        real_label: float = 1.0,
        grid_cols: int = 8,
        scorer_checkpoint: str | None = None,
        val_samples: int = 2000,
        test_samples: int = 10000,
        eval_batch_size: int = 1000,
        sample_seed: int = 0,
        ema_decay: float | None = None,
        latent_code: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator", "optimizer", "scheduler"])
        self.automatic_optimization = False
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.image_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.conditional = conditional
        self.aux_classifier = conditional or aux_classifier
        self.latent_code = int(latent_code)
        if self.latent_code == 1 or self.latent_code < 0:
            raise ModelConfigError(f"model.latent_code must be 0 (none) or at least 2 categories, got {latent_code}")
        if self.latent_code and self.aux_classifier:
            raise ModelConfigError(
                "model.latent_code (InfoGAN) uses the discriminator's class head for its code: it "
                "cannot be combined with model.conditional or model.aux_classifier"
            )
        # What the generator is conditioned on and the discriminator's class head predicts: the data's
        # classes (conditional GAN, auxiliary classifier) or the categories of the InfoGAN code.
        self.head_classes = self.latent_code or self.num_classes
        self._build_networks(generator, discriminator)
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ModelConfigError(f"model.ema_decay must be in (0, 1) or null, got {ema_decay}")
        # The generator that draws samples and is scored: an exponential moving average of the trained
        # one's weights (and batch-norm statistics) when ema_decay is set, which smooths out the
        # oscillation of adversarial training; the trained generator itself otherwise.
        self.generator_ema: AveragedModel | None = None
        if ema_decay:
            self.generator_ema = AveragedModel(self.generator, avg_fn=_ema(ema_decay), use_buffers=True)
            self.generator_ema.requires_grad_(False)
        self._fixed_inputs(latent_dim, grid_cols, sample_seed)
        self.scorer: Scorer | None = None
        self._reset_real()
        # The epoch's sample-weighted mean of each loss (train/d_loss, train/g_loss); not saved in checkpoints.
        self.epoch_losses = torch.nn.ModuleDict({"d_loss": WeightedMean(), "g_loss": WeightedMean()})

    def _build_networks(self, generator: Callable[..., Generator], discriminator: Callable[..., Discriminator]) -> None:
        """Both networks for the data's image shape, run once on a dummy batch so a mismatch shows now."""
        latent_dim = self.hparams["latent_dim"]
        try:
            self.generator = generator(
                image_shape=self.image_shape,
                num_classes=self.head_classes,
                latent_dim=latent_dim,
                conditional=self.conditional or bool(self.latent_code),
            )
            self.discriminator = discriminator(
                image_shape=self.image_shape,
                num_classes=self.head_classes,
                conditional=self.aux_classifier or bool(self.latent_code),
            )
            self._check_shapes()
        except (RuntimeError, ValueError) as exc:
            raise ModelConfigError(
                f"the GAN cannot be built for images of shape {list(self.image_shape)}: {exc}"
            ) from None

    def _fixed_inputs(self, latent_dim: int, grid_cols: int, sample_seed: int) -> None:
        """The same noise (and labels, or codes) for every sample grid, so successive grids show the generator's
        progress (one row per class, or code, when there are classes to draw); and the model summary's input."""
        rows = self.head_classes if self.generator.conditional else grid_cols
        noise = torch.randn(rows * grid_cols, latent_dim, generator=torch.Generator().manual_seed(sample_seed))
        self.register_buffer("fixed_noise", noise)
        self.register_buffer("fixed_labels", torch.arange(rows).repeat_interleave(grid_cols), persistent=False)
        # labels given even for an InfoGAN code, so the summary draws no random numbers
        z = torch.zeros(2, latent_dim)
        self.example_input_array = (z, torch.zeros(2, dtype=torch.long)) if self.generator.conditional else z

    def _check_shapes(self) -> None:
        """Run both networks on a dummy batch, so a mismatch shows before training starts."""
        z = torch.zeros(2, self.hparams["latent_dim"])
        labels = torch.zeros(2, dtype=torch.long) if self.generator.conditional else None
        with torch.no_grad():
            images = self.generator.eval()(z, labels)
            self.generator.train()
            if tuple(images.shape[1:]) != self.image_shape:
                raise ValueError(f"the generator draws images of shape {list(images.shape[1:])}")
            logits, classes = self.discriminator(images)
        wrong_classes = classes is None or tuple(classes.shape) != (2, self.head_classes)
        if tuple(logits.shape) != (2,) or (self.discriminator.conditional and wrong_classes):
            raise ValueError("the discriminator does not return one logit per image (and class logits when asked)")

    @property
    def sampler(self) -> Generator:
        """The generator that draws samples: the moving average when ``ema_decay`` is set."""
        if self.generator_ema is None:
            return self.generator
        return cast(Generator, self.generator_ema.module)  # AveragedModel types its copy of the generator as Module

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] drawn from noise ``z``: for the ``labels`` when conditional; with ``labels``
        as the codes of an InfoGAN (random codes when none are given)."""
        if self.latent_code and labels is None:
            labels = self._generator_input(None, z.shape[0])
        return (self.sampler(z, labels if self.sampler.conditional else None) + 1) / 2

    def _generator_input(
        self, labels: torch.Tensor | None, n: int, rng: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """What the generator is told to draw for ``n`` images: uniform random InfoGAN codes, the requested
        ``labels`` when conditional, or nothing."""
        if self.latent_code:
            return torch.randint(self.latent_code, (n,), generator=rng).to(self.device)
        return labels if self.conditional else None

    # --- training ---------------------------------------------------------------------------------

    @property
    def iterations(self) -> int:
        """Batches trained: each batch takes two optimizer steps, and Lightning's global_step counts both."""
        return self.global_step // 2

    def _finite(self, loss: torch.Tensor, name: str) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{name} loss is {loss.item()} at step {self.iterations} (epoch {self.current_epoch}); "
                "lower optimizer.lr or check the data for extreme values"
            )

    def training_step(self, batch: Any, batch_idx: int) -> None:
        step = self.iterations  # batches trained before this one
        x, y = batch
        real = x * 2 - 1
        n = real.shape[0]
        optimizers = self.optimizers()
        assert isinstance(optimizers, list)  # two, from configure_optimizers
        opt_g, opt_d = optimizers
        # conditional: the real batch's labels (the data's class balance); InfoGAN: random codes
        wanted = self._generator_input(y, n)
        fake = self.generator(torch.randn(n, self.hparams["latent_dim"], device=self.device), wanted)
        ones = torch.full((n,), self.hparams["real_label"], device=self.device)
        zeros = torch.zeros(n, device=self.device)

        with self.toggled_optimizer(opt_d):
            real_logit, real_classes = self.discriminator(real)
            fake_logit, fake_codes = self.discriminator(fake.detach())
            d_loss = (
                F.binary_cross_entropy_with_logits(real_logit, ones)
                + F.binary_cross_entropy_with_logits(fake_logit, zeros)
            ) / 2
            if self.aux_classifier:  # real images only: a class loss on generated ones lets the head learn
                # the generator's mistakes (it drew 4s for 9 and the head learnt to call them 9s)
                d_loss = d_loss + self.hparams["aux_weight"] * F.cross_entropy(real_classes, y)
            if self.latent_code:  # InfoGAN: read the code back from the generated image
                assert wanted is not None  # random codes, from _generator_input
                d_loss = d_loss + self.hparams["aux_weight"] * F.cross_entropy(fake_codes, wanted)
            self._finite(d_loss, "discriminator")
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()

        with self.toggled_optimizer(opt_g):
            logit, classes = self.discriminator(fake)
            g_loss = F.binary_cross_entropy_with_logits(logit, torch.ones(n, device=self.device))
            if wanted is not None:  # draw what was asked for: the requested digit, or a readable code
                g_loss = g_loss + self.hparams["aux_weight"] * F.cross_entropy(classes, wanted)
            self._finite(g_loss, "generator")
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)

        self._log_losses(step, batch_idx, n, {"d_loss": d_loss, "g_loss": g_loss})

    def _log_losses(self, step: int, batch_idx: int, n: int, losses: dict[str, torch.Tensor]) -> None:
        """Epoch means weighted by batch size as ``train/<name>``, and the batch values as
        ``train/<name>_step`` every ``trainer.log_every_n_steps`` batches (like ``SupervisedModule``)."""
        means = cast(Mapping[str, WeightedMean], self.epoch_losses)  # torch types a ModuleDict's values as Module
        for name, loss in losses.items():
            means[name].update(loss, weight=n)
        # log_every_n_steps: set on the Trainer by Lightning's LoggerConnector, not declared by the class
        if step % self.trainer.log_every_n_steps == 0:  # type: ignore[attr-defined]
            log_step_values(self, {f"train/{name}_step": float(loss.detach()) for name, loss in losses.items()}, step)
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self.log_dict(
                {f"train/{name}": mean.compute() for name, mean in means.items()},
                prog_bar=True,
                on_step=False,
                on_epoch=True,
            )
            for mean in means.values():
                mean.reset()

    def on_train_epoch_end(self) -> None:
        for scheduler in self._schedulers():
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                metric = self.trainer.callback_metrics.get("val/fid")
                if metric is not None:
                    scheduler.step(metric)
            else:
                scheduler.step()

    def _schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return list(schedulers) if isinstance(schedulers, list) else [schedulers]

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ModelConfigError("this model was rebuilt for inference (optimizer=None) and cannot be trained")
        optimizers = [
            self.optimizer_factory(params=self.generator.parameters()),
            self.optimizer_factory(params=self.discriminator.parameters()),
        ]
        if self.scheduler_factory is None:
            return optimizers
        return optimizers, [self.scheduler_factory(optimizer=o) for o in optimizers]

    # --- sample grids -----------------------------------------------------------------------------

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor:
        """The fixed-noise grid, drawn by the generator in eval mode (one row per class when conditional)."""
        sampler = self.sampler
        was_training = sampler.training
        sampler.eval()
        try:
            images = self(self.fixed_noise, self.fixed_labels)
        finally:
            sampler.train(was_training)
        return images.clamp(0, 1).cpu()

    def save_samples(self, path: str | Path) -> None:
        """Write the grid as a PNG, atomically: ``pipeline.evaluate``'s ``plots/samples.png`` for DVC.

        During training the ``GANProgress`` callback draws the grids instead.
        """
        with atomic_open(path, "wb") as fh:
            save_image(self.sample_grid(), fh, nrow=self.hparams["grid_cols"], format="png", padding=2)

    # --- scoring ----------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # datamodule: set on the Trainer by Lightning's DataConnector, not declared by the class
        spec = getattr(self.trainer.datamodule, "spec", None)  # type: ignore[attr-defined]
        if spec is not None and spec.normalize:
            raise ModelConfigError("a GAN needs images in [0, 1]: set data.datamodule.normalize=false")
        path = self.hparams["scorer_checkpoint"]
        if path and self.scorer is None:
            if not Path(path).is_file():
                raise ModelConfigError(
                    f"model.scorer_checkpoint={path} does not exist: train the MNIST classifier first "
                    "(dvc repro train@mnist_cnn writes experiments/mnist_cnn/model.ckpt), point "
                    "model.scorer_checkpoint at another classifier checkpoint, or set it to null to train without "
                    "scores (then also callbacks.model_checkpoint.monitor=null)"
                )
            scorer = Scorer.from_checkpoint(path)
            if scorer.input_shape != self.image_shape:
                raise ModelConfigError(
                    f"the scorer {path} takes images of shape {list(scorer.input_shape)}, the GAN draws "
                    f"{list(self.image_shape)}"
                )
            self.scorer = scorer

    def _reset_real(self) -> None:
        self._real_stats, self._real_scores = FeatureStats(), ClassScores()
        self._real_labels: list[torch.Tensor] = []

    def _score_real(self, batch: Any) -> None:
        if self.scorer is None:
            return
        x, y = batch
        features, probs = self.scorer.to(self.device)(x)
        self._real_stats.update(features)
        self._real_scores.update(probs)
        self._real_labels.append(y.cpu())

    def _log_scores(self, stage: str, n_samples: int) -> None:
        """Score ``n_samples`` generated images (fixed seed: comparable across epochs) against the real split."""
        if self.scorer is None or self._real_stats.n < 2:
            self._reset_real()
            return
        rng = torch.Generator().manual_seed(self.hparams["sample_seed"] + 1)
        real_labels = torch.cat(self._real_labels)
        fake_stats, fake_scores = FeatureStats(), ClassScores()
        for start in range(0, n_samples, self.hparams["eval_batch_size"]):
            m = min(self.hparams["eval_batch_size"], n_samples - start)
            z = torch.randn(m, self.hparams["latent_dim"], generator=rng).to(self.device)
            labels = real_labels[torch.randint(len(real_labels), (m,), generator=rng)].to(self.device)
            features, probs = self.scorer(self(z, self._generator_input(labels, m, rng)))
            fake_stats.update(features)
            fake_scores.update(probs, labels if self.conditional else None)
        self.log(f"{stage}/fid", frechet_distance(self._real_stats, fake_stats), prog_bar=True)
        self.log(f"{stage}/is", fake_scores.inception_score(), prog_bar=True)
        self.log(f"{stage}/is_real", self._real_scores.inception_score())
        if self.conditional:
            self.log(f"{stage}/class_acc", fake_scores.accuracy(), prog_bar=True)
        self._reset_real()

    def on_validation_epoch_start(self) -> None:
        self._reset_real()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._score_real(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val", self.hparams["val_samples"])

    def on_test_epoch_start(self) -> None:
        self._reset_real()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._score_real(batch)

    def on_test_epoch_end(self) -> None:
        self._log_scores("test", self.hparams["test_samples"])


def _ema(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | int], torch.Tensor]:
    """AveragedModel's update for an exponential moving average whose decay warms up as
    (1 + n) / (10 + n) towards ``decay``, so early samples are not dominated by the random start."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor | int) -> torch.Tensor:
        n = float(num_averaged)
        beta = min(decay, (1 + n) / (10 + n))
        return beta * averaged + (1 - beta) * current

    return average
