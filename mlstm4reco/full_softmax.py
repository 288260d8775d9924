"""Cross-entropy over every item, with the scores, the softmax and its gradient in one
buffer.

For nets that score items linearly (``states @ embeddings.T + biases``), the full
softmax loss is one autograd function: the forward writes the (M, S) scores, sets the
left-out items' to -inf (from index pairs, not an (M, S) mask), and turns the scores into
probabilities in place; the backward turns the
probabilities into the scores' gradient in place and takes the two matmuls. The
composite of ``addmm``, ``masked_fill``, ``log_softmax`` and ``nll_loss`` allocates and
fills about four (M, S) tensors a batch, each a fresh allocation that the operating
system zeroes page by page; at M = 15,000 positions and S = 4,000 items that is most of
a batch's time on the CPU (docs/benchmarks.md). Same loss and gradients as the composite
up to float32 rounding.
"""

from __future__ import annotations

import torch

__all__ = ["full_softmax_cross_entropy"]


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, embeddings, biases, targets, left_out):
        probabilities = torch.addmm(biases, states, embeddings.t())  # (M, S)
        if probabilities.dtype in (torch.float16, torch.bfloat16):  # autocast's scores
            probabilities = probabilities.float()
        if left_out is not None:
            probabilities.index_put_(left_out, probabilities.new_tensor(-torch.inf))
        target_scores = probabilities.gather(1, targets.unsqueeze(1)).squeeze(1)
        maxima = probabilities.amax(dim=1, keepdim=True)
        probabilities.sub_(maxima).exp_()
        sums = probabilities.sum(dim=1, keepdim=True)
        probabilities.div_(sums)
        losses = maxima.squeeze(1) + sums.squeeze(1).log() - target_scores
        ctx.probabilities = probabilities  # rewritten by backward: not saved as a tensor
        ctx.save_for_backward(states, embeddings, targets)
        return losses.mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        states, embeddings, targets = ctx.saved_tensors
        grad = ctx.probabilities
        if grad is None:
            raise RuntimeError(
                "full_softmax_cross_entropy's backward ran twice: its buffer is rewritten "
                "by the first (retain_graph is not supported)"
            )
        ctx.probabilities = None
        rows = torch.arange(grad.shape[0], device=grad.device)
        grad[rows, targets] -= 1.0
        grad.mul_(grad_loss / grad.shape[0])
        grad_states = grad_embeddings = grad_biases = None
        if ctx.needs_input_grad[0]:
            grad_states = (grad @ embeddings.to(grad.dtype)).to(states.dtype)
        if ctx.needs_input_grad[1]:
            grad_embeddings = (grad.t() @ states.to(grad.dtype)).to(embeddings.dtype)
        if ctx.needs_input_grad[2]:
            grad_biases = grad.sum(dim=0).to(embeddings.dtype)
        return grad_states, grad_embeddings, grad_biases, None, None


def full_softmax_cross_entropy(
    states: torch.Tensor,
    embeddings: torch.Tensor,
    biases: torch.Tensor,
    targets: torch.Tensor,
    left_out: tuple[torch.Tensor, torch.Tensor] | None = None,
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

    Returns
    -------
    A scalar tensor; its backward can run once (the graph cannot be retained).
    """
    return _FullSoftmaxCrossEntropy.apply(states, embeddings, biases, targets, left_out)
