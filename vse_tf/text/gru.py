"""A GRU whose input projection runs once over the whole sequence, and whose backward pass
computes the weight gradients as one matmul each after the recurrence.

On a CPU, ``keras.layers.GRU`` runs its cell once per time step, under a ``tf.while_loop``
that TensorFlow differentiates step by step: each backward step multiplies out the gradients
of both kernels (two more matmuls per step) and adds them into accumulators the size of the
kernels, and slicing the gate pre-activations costs a full-size ``StridedSliceGrad`` per
slice. At the VSE++ shapes (batch 128, words 300 -> GRU 1024) that backward loop was about
70% of a training step (TensorFlow profiler; docs/benchmarks.md). :class:`ProjectedGRU`
keeps the layer (same weights, config, masking and outputs) and replaces its loop:

- forward: ``x @ W + b`` for all steps in one matmul; in the loop only ``h @ U``, the
  candidate's recurrent bias and the gates;
- backward (``training=True``, a ``tf.custom_gradient``): the loop carries only the state's
  gradient (one ``d_gates @ U^T`` per step) and records each step's gate gradients; ``dU``
  is then one ``[U, B*T] @ [B*T, 3U]`` matmul, ``dW`` and ``dx`` one matmul each, the bias
  gradients column sums.

Padded steps (mask false) keep the previous state, as in Keras; the layer returns the state
after each row's last valid step (the initial state for an all-padding row). Only the
configuration the text tower uses runs this way (``reset_after``, bias, ``tanh`` / ``sigmoid``,
no dropout while training, last state only, not unrolled, no GPU); any other falls back to
``keras.layers.GRU``'s own loop. Inference (``training`` false, and so the exported
SavedModel) runs the same forward loop without recording anything, in core TensorFlow ops.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import tree


@keras.saving.register_keras_serializable(package="vse_tf")
class ProjectedGRU(keras.layers.GRU):
    """``keras.layers.GRU`` with the input projection out of the loop and a cheaper backward pass.

    Same arguments, weights (``cell.kernel`` ``[D, 3U]``, ``cell.recurrent_kernel``
    ``[U, 3U]``, ``cell.bias`` ``[2, 3U]``) and outputs as ``keras.layers.GRU``; a checkpoint
    of either loads into the other.
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._projects(training):
            return super().inner_loop(sequences, initial_state, mask=mask, training=training)
        state = initial_state[0] if tree.is_nested(initial_state) else initial_state
        if tree.is_nested(mask):
            mask = mask[0]
        dtype = sequences.dtype
        last = gru_last_state(
            sequences,
            mask,
            state,
            tf.cast(self.cell.kernel, dtype),
            tf.cast(self.cell.recurrent_kernel, dtype),
            tf.cast(self.cell.bias, dtype),
            go_backwards=self.go_backwards,
            custom_gradient=bool(training),
        )
        return last, last[:, None, :], [last]

    def _projects(self, training) -> bool:
        cell = self.cell
        return (
            keras.backend.backend() == "tensorflow"
            and not self.return_sequences
            and not self.unroll
            and cell.reset_after
            and cell.use_bias
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and not (training and (cell.dropout or cell.recurrent_dropout))
            and not tf.config.list_logical_devices("GPU")  # keras.layers.GRU uses cuDNN there
        )


def gru_last_state(
    inputs: tf.Tensor,
    mask: tf.Tensor | None,
    initial_state: tf.Tensor,
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    bias: tf.Tensor,
    go_backwards: bool = False,
    custom_gradient: bool = True,
) -> tf.Tensor:
    """The GRU (``reset_after``, Keras' gate order z, r, h) state after the last valid step.

    Args:
        inputs: ``[B, T, D]``.
        mask: ``bool [B, T]``, false for padded steps (which keep the state); None: all valid.
        initial_state: ``[B, U]``.
        kernel: ``[D, 3U]``; recurrent_kernel: ``[U, 3U]``; bias: ``[2, 3U]`` (input, recurrent).
        go_backwards: run from the last step to the first.
        custom_gradient: differentiate the recurrence by the hand-written backward pass
            (weight gradients after the loop); False leaves it to TensorFlow's while-loop
            gradient (inference needs none, and then records nothing per step).

    Returns:
        ``[B, U]``.
    """
    steps_first = tf.transpose(inputs, [1, 0, 2])  # [T, B, D]: the loop reads one step at a time
    if mask is None:
        mask = tf.ones(tf.shape(inputs)[:2], tf.bool)
    valid = tf.transpose(tf.cast(mask, tf.bool))[:, :, None]  # [T, B, 1]
    if go_backwards:
        steps_first = tf.reverse(steps_first, [0])
        valid = tf.reverse(valid, [0])
    if custom_gradient:
        return _gru_with_gradient(steps_first, valid, initial_state, kernel, recurrent_kernel, bias)
    projected = _project(steps_first, kernel, bias)
    return _recurrence(projected, valid, initial_state, recurrent_kernel, bias[1], record=False)[0]


def _project(steps_first, kernel, bias):
    """``x @ W + b_x`` for every step at once, ``[T, B, D]`` -> ``[T, B, 3U]``, with the z and r
    parts of ``b_h`` added here too (a sum either side of the loop; the candidate's ``b_h`` is
    inside the reset gate, so stays in the loop)."""
    shape = tf.shape(steps_first)
    units = tf.shape(kernel)[1] // 3
    outside = bias[0] + tf.concat([bias[1][: 2 * units], tf.zeros([units], bias.dtype)], 0)
    projected = tf.nn.bias_add(tf.matmul(tf.reshape(steps_first, [-1, shape[2]]), kernel), outside)
    return tf.reshape(projected, tf.concat([shape[:2], tf.shape(kernel)[1:]], 0))


def _gates(projected_t, state, recurrent_kernel, recurrent_bias):
    """One step: the new state, and what the backward pass needs: the z and r gates side by
    side ``[B, 2U]``, the candidate and ``(h @ U + b_h)`` of the candidate ``[B, U]``."""
    units = state.shape[-1] or tf.shape(state)[-1]
    inner = tf.matmul(state, recurrent_kernel)  # b_h: z's and r's parts are in projected_t
    x_zr, x_h = tf.split(projected_t, [2 * units, units], axis=-1)
    inner_zr, inner_h = tf.split(inner, [2 * units, units], axis=-1)
    inner_h = inner_h + recurrent_bias[2 * units :]
    zr = tf.sigmoid(x_zr + inner_zr)
    z, r = tf.split(zr, 2, axis=-1)
    candidate = tf.tanh(x_h + r * inner_h)
    return candidate + z * (state - candidate), zr, candidate, inner_h


_RECORDS = ("previous", "zr", "candidate", "inner_h")


def _recurrence(projected, valid, initial_state, recurrent_kernel, recurrent_bias, record: bool):
    """The loop over ``projected [T, B, 3U]``; with ``record``, each step's state before it
    and its gates (see :func:`_gates`), stacked over the steps."""
    steps = tf.shape(projected)[0]
    dtype = projected.dtype
    state_shape = initial_state.shape
    shapes = (state_shape, state_shape[:-1].concatenate([None if state_shape[-1] is None else 2 * state_shape[-1]]))
    shapes += (state_shape, state_shape)
    arrays = tuple(tf.TensorArray(dtype, size=steps, element_shape=shape) for shape in shapes) if record else ()

    def body(time, state, *arrays):
        new, *gates = _gates(projected[time], state, recurrent_kernel, recurrent_bias)
        if record:
            arrays = tuple(array.write(time, value) for array, value in zip(arrays, (state, *gates)))
        return (time + 1, tf.where(valid[time], new, state), *arrays)

    _, state, *arrays = tf.while_loop(
        lambda time, *_: time < steps,
        body,
        (tf.constant(0), initial_state, *arrays),
        maximum_iterations=steps,
    )
    return state, {name: array.stack() for name, array in zip(_RECORDS, arrays)}


@tf.custom_gradient
def _gru_with_gradient(steps_first, valid, initial_state, kernel, recurrent_kernel, bias):
    """The GRU over ``steps_first [T, B, D]`` with the backward pass written out: the loop
    carries the state's gradient only; the weight gradients are one matmul each after it."""
    projected = _project(steps_first, kernel, bias)
    state, records = _recurrence(projected, valid, initial_state, recurrent_kernel, bias[1], record=True)

    def gradient(state_gradient):
        steps = tf.shape(projected)[0]
        dtype = projected.dtype
        inner_gradients = tf.TensorArray(dtype, size=steps, element_shape=projected.shape[1:])
        candidate_gradients = tf.TensorArray(dtype, size=steps, element_shape=initial_state.shape)
        keep = tf.cast(valid, dtype)

        def body(time, d_state, inner_gradients, candidate_gradients):
            t = steps - 1 - time
            previous, zr, candidate, inner_h = (records[name][t] for name in _RECORDS)
            z, r = tf.split(zr, 2, axis=-1)
            d_new = d_state * keep[t]  # a padded step passes the gradient through unchanged
            # Gradients of the pre-activations: the candidate's, then z's and r's side by side.
            d_candidate = tf.raw_ops.TanhGrad(y=candidate, dy=d_new * (1 - z))
            d_zr = tf.raw_ops.SigmoidGrad(
                y=zr, dy=tf.concat([d_new * (previous - candidate), d_candidate * inner_h], -1)
            )
            d_inner = tf.concat([d_zr, d_candidate * r], axis=-1)  # of h @ U + b_h
            # d_inner @ U^T as an einsum: about twice as fast on a CPU as tf.matmul (oneDNN's
            # MatMul with this operand order), transposed or not.
            through = d_new * z + tf.einsum("bk,uk->bu", d_inner, recurrent_kernel)
            return (
                time + 1,
                tf.where(valid[t], through, d_state),
                inner_gradients.write(t, d_inner),
                candidate_gradients.write(t, d_candidate),
            )

        _, d_initial, inner_gradients, candidate_gradients = tf.while_loop(
            lambda time, *_: time < steps,
            body,
            (tf.constant(0), state_gradient, inner_gradients, candidate_gradients),
            maximum_iterations=steps,
        )
        units = tf.shape(recurrent_kernel)[0]
        d_inner = tf.reshape(inner_gradients.stack(), [-1, 3 * units])
        # x @ W's gradient: z's and r's as h @ U's; the candidate's without the reset gate.
        d_projected = tf.concat([d_inner[:, : 2 * units], tf.reshape(candidate_gradients.stack(), [-1, units])], -1)
        previous = tf.reshape(records["previous"], [-1, units])
        inputs = tf.reshape(steps_first, [-1, tf.shape(steps_first)[2]])
        d_inputs = tf.reshape(tf.einsum("nk,dk->nd", d_projected, kernel), tf.shape(steps_first))
        # Column sums as a product with ones: a few times faster than reduce_sum over axis 0.
        ones = tf.ones([1, tf.shape(d_inner)[0]], dtype)
        d_bias = tf.concat([tf.matmul(ones, d_projected), tf.matmul(ones, d_inner)], 0)
        d_kernel = tf.matmul(inputs, d_projected, transpose_a=True)
        d_recurrent_kernel = tf.matmul(previous, d_inner, transpose_a=True)
        return d_inputs, None, d_initial, d_kernel, d_recurrent_kernel, d_bias

    return state, gradient
