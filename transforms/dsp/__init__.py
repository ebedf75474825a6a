"""Signal and planning helpers the stages share: no model, no I/O, plain arrays in and out."""
