"""Thin ``model.fit`` entry points: flags -> config -> vse_tf library calls."""
