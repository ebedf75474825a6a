"""songcorpus.train.eval.metrics: the evaluator's metric functions, one module per metric family.

melody (RPA/RCA/OA, voicing, f0 correlation and RMSE), rhythm (onset F1), harmony (chroma cosine, HPCP),
distribution (Frechet distance, per-song FAD, FAD-inf, tagger KL), text (CLAP score, phoneme error
rate), singer (speaker similarity), aesthetics (SongEval, Audiobox-Aesthetics), speed (real-time
factor); embeddings holds the pluggable audio embedders and taggers, ge2e the GE2E speaker encoder that singer
can load beside ECAPA; common what they all share. Every metric takes numpy arrays and sample rates (no file
reading) and raises common.MetricUnavailable with a reason when it is undefined for its input.
"""
