"""A job's own on-disk state: the output folder's claim, the temp folder, the engine exchange folder and the stored
scores.
"""
