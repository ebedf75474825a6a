"""songcorpus.train.eval.probes: research probes of what a trained model reads, which ``songcorpus evaluate`` never
runs (bench/f0_use.py and bench/condition_use.py print them).

paired_loss (the shared mechanism: held-out batches scored with the same draws as given and altered), f0_use
(does a melody model follow its f0; which of UniSinger's SVC conditions it reads), condition_use (does an
accompaniment model read its vocals and their timing), content_alignment (UniSinger's attention from each audio
frame to its own content token), linear_read (how much pitch can explain of the target, and how much the
content input carries, read linearly from the corpus).
"""
