"""What the trainer and the scoring job share, without torch: the bundle format, table schemas,
the rating scale, id lookup, pair batching, parity rules, errors, paths, publishing and CLI plumbing."""
