"""The scoring worker: consume frames, decode, batch, embed, score, publish, commit."""
