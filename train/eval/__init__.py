"""songcorpus.train.eval: ``songcorpus evaluate`` and what it is made of.

The evaluator's core: evaluate (the command's two modes), heldout (the held-out windows and the systems that
answer them), scoring (which metrics judge a generator, one system's outputs scored), tables (the metrics tables
and the printed summary). Under it, metrics/ (the metric functions, one module per family, and the models they
embed with); beside it, probes/ (research probes of what a trained model reads, which the evaluator never runs).
"""
