"""The image builder: Dockerfile parsing, build context, layers from diffs, cache, and step execution."""
