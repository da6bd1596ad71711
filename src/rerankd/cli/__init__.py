"""The `rerankd` command line."""
