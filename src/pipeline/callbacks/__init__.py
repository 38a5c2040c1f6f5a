"""Lightning callbacks: figures of the data and the model, the epoch history, transfer learning's frozen
features, and the record every checkpoint carries."""
