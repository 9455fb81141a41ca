"""fraud-rollout: the command-line entry point and the end-to-end demo."""
