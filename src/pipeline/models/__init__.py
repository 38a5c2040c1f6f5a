"""One LightningModule per model family, with plain ``nn.Module`` builders beside them."""
