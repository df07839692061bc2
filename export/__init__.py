"""Thin SavedModel export entry points over vse_tf.serving."""
