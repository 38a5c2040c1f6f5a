"""Lightning callbacks that watch a run and write what people look at: figures of the data and the model."""
