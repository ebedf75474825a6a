"""Model adapters and the one registry of known weights: what stages load, where it comes from (a package or the
model store), and how it is run (device, precision, batching).
"""
