"""Example bots, each tested (tests/actors/test_examples.py and the cluster tests)."""
