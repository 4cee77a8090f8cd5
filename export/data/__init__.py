"""The data stage: fetching MovieLens, reading ratings files, splitting, and the in-memory data set."""
