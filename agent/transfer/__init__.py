"""Moving images and containers between agents without a registry: blobs, commit, volumes, recreate."""
