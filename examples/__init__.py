"""Example bots, each tested (tests/runtime/test_examples.py; the demo runs Greeter)."""
