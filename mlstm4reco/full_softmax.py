"""Cross-entropy over every item as one autograd function, all items at once or a chunk of
items at a time.

For nets that score items linearly (``states @ embeddings.T + biases``), the full
softmax loss need not go through autograd's composite of ``addmm``, ``masked_fill``,
``log_softmax`` and ``nll_loss``, which allocates and fills about four (M, S) tensors a
batch, each a fresh allocation that the operating system zeroes page by page; at
M = 15,000 positions and S = 4,000 items that was most of a batch's time on the CPU
(docs/benchmarks.md). Here, all at once, one (M, S) buffer holds the scores, then the
probabilities (in place, in the forward), then their gradient (in place, in the
backward). In chunks of C items, the forward carries the log-sum-exp across chunks and
keeps no scores; the backward scores each chunk again and turns it into its gradient in
place: the peak is one (M, C) buffer. Left-out items (the input's own, with
``exclude_preceding``) come as index pairs and score -inf. Same loss and gradients as the
composite up to rounding (tests/test_full_softmax.py).

On the CPU these buffers come from a pool of one free buffer per thread and dtype: a
batch's buffer goes back when its backward is done (a chunk's when the chunk is), and the
next batch writes into the same memory rather than into a fresh allocation, which the
operating system would map and zero page by page again (a large share of a batch's
system time: docs/benchmarks.md). A buffer taken is nobody else's until given back, so forwards
that overlap (two losses, then their backwards) each get their own.
:meth:`ImplicitSequenceModel.fit <mlstm4reco.sequence_model.ImplicitSequenceModel.fit>`
empties the pool when it ends (:func:`release_buffers`); :func:`reuse_buffers` turns
the pool off (for measuring it).
"""

from __future__ import annotations

import threading

import torch

from mlstm4reco import matmul

__all__ = ["full_softmax_cross_entropy", "release_buffers", "reuse_buffers"]

_pool = threading.local()  # .free: dtype -> the largest flat CPU buffer given back
_reuse = True


def _take(rows: int, columns: int, like: torch.Tensor) -> torch.Tensor | None:
    """An uninitialised (rows, columns) CPU buffer of ``like``'s dtype from the pool (None
    off the CPU): the free one when it is large enough, else a new one."""
    if like.device.type != "cpu":
        return None
    if not _reuse:
        return like.new_empty(rows, columns)
    free = _pool.__dict__.setdefault("free", {})
    buffer = free.pop(like.dtype, None)
    if buffer is None or buffer.numel() < rows * columns:
        buffer = like.new_empty(rows * columns)
    return buffer[: rows * columns].view(rows, columns)


def _give(buffer: torch.Tensor) -> None:
    """Put a buffer of :func:`_take` back (kept if larger than the free one)."""
    if buffer.device.type != "cpu" or not _reuse:
        return
    flat = buffer if buffer._base is None else buffer._base
    free = _pool.__dict__.setdefault("free", {})
    kept = free.get(flat.dtype)
    if kept is None or kept.numel() < flat.numel():
        free[flat.dtype] = flat


def release_buffers() -> None:
    """Drop this thread's free buffers (their memory goes back to the allocator)."""
    _pool.__dict__.pop("free", None)


def reuse_buffers(enable: bool | None = None) -> bool:
    """Whether the CPU buffers come from the pool (default True); ``enable`` sets it
    first, for this process (False also drops this thread's free buffers)."""
    global _reuse
    if enable is not None:
        _reuse = bool(enable)
        if not _reuse:
            release_buffers()
    return _reuse


def _scores(states, embeddings, biases, left_out, start, stop):
    """(M, stop - start) scores of the candidates start..stop-1, the left-out ones -inf;
    on the CPU outside autocast, in a buffer of the pool (:func:`_give` it back)."""
    if torch.is_autocast_enabled(states.device.type):
        scores = torch.addmm(biases[start:stop], states, embeddings[start:stop].t())
    else:  # the matmul oneDNN's on the CPU (mlstm4reco.matmul), the biases added in place
        candidates = embeddings[start:stop]  # stop may lie past the last candidate
        out = _take(states.shape[0], candidates.shape[0], states)
        scores = matmul.mm(states, candidates.t(), out).add_(biases[start:stop])
    if scores.dtype in (torch.float16, torch.bfloat16):  # autocast's scores
        scores = scores.float()
    if left_out is not None:
        rows, columns = left_out
        if start > 0 or stop < embeddings.shape[0]:
            inside = (columns >= start) & (columns < stop)
            rows, columns = rows[inside], columns[inside] - start
        scores.index_put_((rows, columns), scores.new_tensor(-torch.inf))
    return scores


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, embeddings, biases, targets, left_out, chunk_size):
        count = embeddings.shape[0]
        step = count if chunk_size is None else min(chunk_size, count)
        ctx.step, ctx.left_out = step, left_out
        if step == count:  # one buffer, kept for the backward
            probabilities = _scores(states, embeddings, biases, left_out, 0, count)
            target_scores = probabilities.gather(1, targets.unsqueeze(1)).squeeze(1)
            maxima = probabilities.amax(dim=1, keepdim=True)
            probabilities.sub_(maxima).exp_()
            sums = probabilities.sum(dim=1, keepdim=True)
            probabilities.div_(sums)
            normalisers = maxima.squeeze(1) + sums.squeeze(1).log()
            ctx.probabilities = probabilities  # rewritten by backward: not a saved tensor
        else:
            normalisers = None
            for start in range(0, count, step):
                scores = _scores(states, embeddings, biases, left_out, start, start + step)
                chunk = torch.logsumexp(scores, dim=1)
                _give(scores)
                normalisers = chunk if normalisers is None else torch.logaddexp(normalisers, chunk)
            target_scores = (states * embeddings[targets]).sum(dim=1) + biases[targets]
            target_scores = target_scores.to(normalisers.dtype)
            ctx.probabilities = None
        ctx.save_for_backward(states, embeddings, biases, targets, normalisers)
        ctx.backward_done = False
        return (normalisers - target_scores).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        if ctx.backward_done:
            raise RuntimeError(
                "full_softmax_cross_entropy's backward ran twice: its buffer is rewritten "
                "by the first (retain_graph is not supported)"
            )
        ctx.backward_done = True
        states, embeddings, biases, targets, normalisers = ctx.saved_tensors
        count, rows = embeddings.shape[0], states.shape[0]
        scale = grad_loss / rows
        need_states, need_embeddings, need_biases = ctx.needs_input_grad[:3]
        grad_states = torch.empty_like(states, dtype=normalisers.dtype) if need_states else None
        grad_embeddings = torch.empty_like(embeddings) if need_embeddings else None
        grad_biases = torch.empty_like(biases) if need_biases else None
        every_row = torch.arange(rows, device=states.device)
        for start in range(0, count, ctx.step):
            stop = min(start + ctx.step, count)
            if ctx.probabilities is not None:  # all items at once: the forward's buffer
                grad, ctx.probabilities = ctx.probabilities, None
            else:
                grad = _scores(states, embeddings, biases, ctx.left_out, start, stop)
                grad.sub_(normalisers.unsqueeze(1)).exp_()
            inside = (targets >= start) & (targets < stop)
            grad[every_row[inside], targets[inside] - start] -= 1.0
            grad.mul_(scale)
            if need_states:
                beta = 0.0 if start == 0 else 1.0  # the first chunk writes, the rest add
                matmul.mm(grad, embeddings[start:stop].to(grad.dtype), grad_states, beta=beta)
            if need_embeddings and grad_embeddings.dtype == grad.dtype:
                matmul.mm(grad.t(), states.to(grad.dtype), grad_embeddings[start:stop])
            elif need_embeddings:
                grad_embeddings[start:stop] = grad.t() @ states.to(grad.dtype)
            if need_biases:
                grad_biases[start:stop] = grad.sum(dim=0)
            _give(grad)
        if need_states:
            grad_states = grad_states.to(states.dtype)
        return grad_states, grad_embeddings, grad_biases, None, None, None


def full_softmax_cross_entropy(
    states: torch.Tensor,
    embeddings: torch.Tensor,
    biases: torch.Tensor,
    targets: torch.Tensor,
    left_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mean over rows of -log softmax(states @ embeddings.T + biases)[target].

    Parameters
    ----------
    states: tensor (M, D)
        One state per position.
    embeddings, biases: tensors (S, D) and (S,)
        The candidate items' scoring embeddings and biases.
    targets: long tensor (M,)
        Each row's target, an index into the S candidates.
    left_out: (rows, columns), optional
        Index tensors of the candidates left out of their row's softmax (score -inf),
        as ``torch.nonzero(..., as_tuple=True)`` of an (M, S) mask; never a row's target.
    chunk_size: int, optional
        Score this many candidates at a time (forward and backward), so that no more
        than (M, chunk_size) scores are held; None: all at once, in one buffer.

    Returns
    -------
    A scalar tensor; its backward can run once (the graph cannot be retained).
    """
    return _FullSoftmaxCrossEntropy.apply(states, embeddings, biases, targets, left_out, chunk_size)
