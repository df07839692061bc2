"""Gradient caching: the exact gradient of a big batch's loss, micro-batch by micro-batch.

Contrastive losses want big batches (every other row is a negative) whose activations do not
fit in memory at once. Gradient caching (Gao et al. 2021, "GradCache") splits the step in
three:

1. embed the batch ``micro_batch`` rows at a time, without a tape (no activations kept);
2. compute the loss on the whole batch's embeddings (gathered across replicas as usual) and
   its gradient with respect to this replica's embeddings, and to the loss's own scalars;
3. run each micro-batch through the towers again under a tape and back-propagate the stored
   embedding gradients: ``d loss / d w = sum_rows (d loss / d e_row) (d e_row / d w)``.

The loss sees every negative of the global batch, and the gradient equals the one-pass
gradient up to float32 rounding, provided a tower gives the same embedding for a row
whichever rows share its micro-batch and on both passes: BatchNormalization in training mode
(batch statistics) is refused, and dropout draws different masks on the two passes.
Peak memory is that of one micro-batch's activations plus ``[B, D]`` embeddings.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def check_cacheable(model: keras.Model) -> None:
    """Raises if a tower normalises by batch statistics (micro-batches would change them)."""
    for tower in (model.image_encoder, model.text_encoder):
        for layer in _all_layers(tower):
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
                raise ValueError(
                    f"train.micro_batch: layer {layer.name!r} of {tower.name} is a trainable BatchNormalization, "
                    "whose batch statistics depend on the micro-batch; use a backbone without it (e.g. "
                    "image.backbone=features) or train.micro_batch=0"
                )


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def cached_gradients(model, data: dict, micro_batch: int) -> tuple[tf.Tensor, list]:
    """The loss of the global batch and this replica's gradients, by gradient caching.

    Args:
        model: a :class:`~vse_tf.model.dual_encoder.DualEncoder` (compiled).
        data: this replica's batch ``{"image": [b, ...], "tokens": int64 [b, L], "image_id": int64 [b], ...}``.
        micro_batch: rows per tower pass (``b`` need not divide by it).

    Returns:
        ``(loss, gradients)``: the unscaled loss and, in ``model.trainable_variables`` order,
        the gradients of the (loss-scaled) loss, as the one-pass step computes them.
    """
    size = tf.shape(data["tokens"])[0]
    slices = _micro_batches(size, micro_batch)
    images, captions = _embed_without_tape(model, data, slices)
    loss, embedding_gradients, scalar_gradients = _loss_and_embedding_gradients(model, data, images, captions)
    tower_variables = [v for v in model.trainable_variables if not _is_loss_scalar(model, v)]
    tower_gradients = _backpropagate(model, data, slices, embedding_gradients, tower_variables)
    by_variable = {id(v): g for v, g in zip(tower_variables, tower_gradients)}
    by_variable.update(scalar_gradients)
    return loss, [by_variable.get(id(v)) for v in model.trainable_variables]


def _micro_batches(size: tf.Tensor, micro_batch: int) -> tf.Tensor:
    """``int32 [n, 2]`` (start, stop) of each micro-batch of ``size`` rows."""
    starts = tf.range(0, size, micro_batch)
    return tf.stack([starts, tf.minimum(starts + micro_batch, size)], axis=1)


def _rows(data: dict, start: tf.Tensor, stop: tf.Tensor) -> dict:
    return {"image": data["image"][start:stop], "tokens": data["tokens"][start:stop]}


def _embed_without_tape(model, data: dict, slices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``[b, D]`` image and caption embeddings, one micro-batch at a time, no activations kept."""
    count = tf.shape(slices)[0]
    arrays = [tf.TensorArray(tf.float32, size=count, infer_shape=False) for _ in range(2)]

    def body(index, image_array, caption_array):
        rows = _rows(data, slices[index, 0], slices[index, 1])
        embedded = model(rows, training=True)
        image_array = image_array.write(index, tf.stop_gradient(tf.cast(embedded["image_embeddings"], tf.float32)))
        caption_array = caption_array.write(
            index, tf.stop_gradient(tf.cast(embedded["caption_embeddings"], tf.float32))
        )
        return index + 1, image_array, caption_array

    # parallel_iterations=2: at most two micro-batches' activations at once (the default allows 10)
    _, image_array, caption_array = tf.while_loop(
        lambda index, *_: index < count, body, [0, *arrays], parallel_iterations=2
    )
    images, captions = image_array.concat(), caption_array.concat()
    rows = data["tokens"].shape[0]  # static in training (whole batches): the chunked loss needs it
    images.set_shape([rows, None])
    captions.set_shape([rows, None])
    return images, captions


def _loss_and_embedding_gradients(model, data: dict, images: tf.Tensor, captions: tf.Tensor):
    """The global batch's loss and its gradients w.r.t. this replica's embeddings and the loss scalars."""
    scalars = list(model.loss_scalars.values())
    with tf.GradientTape() as tape:
        tape.watch([images, captions])
        loss = model.loss_of_embeddings(data, images, captions)
        scaled = model.optimizer.scale_loss(loss)
    image_gradient, caption_gradient, *scalar_gradients = tape.gradient(scaled, [images, captions, *scalars])
    return loss, (image_gradient, caption_gradient), {id(v): g for v, g in zip(scalars, scalar_gradients)}


def _backpropagate(model, data: dict, slices: tf.Tensor, embedding_gradients, variables: list) -> list:
    """Sum over micro-batches of the stored embedding gradients pulled back through the towers."""
    image_gradient, caption_gradient = embedding_gradients

    def micro_batch_gradients(index):
        start, stop = slices[index, 0], slices[index, 1]
        with tf.GradientTape() as tape:
            embedded = model(_rows(data, start, stop), training=True)
            surrogate = tf.reduce_sum(
                tf.cast(embedded["image_embeddings"], tf.float32) * image_gradient[start:stop]
            ) + tf.reduce_sum(tf.cast(embedded["caption_embeddings"], tf.float32) * caption_gradient[start:stop])
        return [None if g is None else tf.convert_to_tensor(g) for g in tape.gradient(surrogate, variables)]

    first = micro_batch_gradients(0)  # fixes which variables get a gradient at all
    present = [i for i, g in enumerate(first) if g is not None]

    def body(index, *totals):
        gradients = micro_batch_gradients(index)
        return (index + 1, *[total + gradients[i] for total, i in zip(totals, present)])

    count = tf.shape(slices)[0]
    _, *totals = tf.while_loop(
        lambda index, *_: index < count, body, [1, *[first[i] for i in present]], parallel_iterations=2
    )
    summed = [None] * len(variables)
    for position, total in zip(present, totals):
        summed[position] = total
    return summed


def _is_loss_scalar(model, variable) -> bool:
    return any(variable is scalar for scalar in model.loss_scalars.values())
