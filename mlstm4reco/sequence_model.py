"""Training sequence representations on implicit feedback: Spotlight's
``ImplicitSequenceModel``, with its constructor and behaviour, plus a device choice,
progress bars, batched prediction, top-k recommendation and save/load."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import torch
from tqdm.auto import tqdm

from mlstm4reco import checkpoint, full_softmax
from mlstm4reco.interactions import SequenceInteractions
from mlstm4reco.losses import LOSSES, LossInput
from mlstm4reco.model_arguments import PRECISIONS, check_constructor_arguments
from mlstm4reco.representations import PADDING_IDX, REPRESENTATIONS, ScoresItems
from mlstm4reco.sampling import sample_items
from mlstm4reco.torch_utils import CarriedGenerator, device_for

__all__ = ["ImplicitSequenceModel", "sample_items"]


class ImplicitSequenceModel:
    """Next-item prediction from sequences of items (Spotlight's model of the same name).

    Parameters
    ----------
    loss: str
        Spotlight's 'pointwise', 'bpr', 'hinge' or 'adaptive_hinge', or 'softmax' (cross
        entropy over all items) or 'sampled_softmax' (against ``num_negative_samples``
        uniform samples shared by the batch); see :mod:`mlstm4reco.losses`.
    representation: str or nn.Module
        A name from :data:`REPRESENTATIONS` ('lstm', 'gru', 'mlstm', 'pooling', 'cnn',
        'mixture', 'mixture_mlstm'; default 'pooling', as Spotlight), or a representation
        instance in Spotlight's protocol.
    representation_kwargs: dict, optional
        Extra constructor arguments for a representation given by name, e.g.
        ``{'state': 'hidden'}`` for 'mlstm'.
    embedding_dim: int
        Dimension of the item embeddings and of the representation's state.
    n_iter: int
        Epochs of training per call of :meth:`fit`.
    batch_size: int
        Sequences per minibatch.
    l2: float
        Weight decay (L2 penalty), at least 0.
    learning_rate: float
        The optimizer's step size, positive.
    optimizer_func: callable, optional
        ``optimizer_func(params, weight_decay=l2, lr=learning_rate)``; default Adam.
    sparse: bool
        Sparse embedding gradients (needs an optimizer that takes them).
    random_state: np.random.RandomState or int, optional
        Drives shuffling, negative sampling and (through derived seeds) the weight
        initialisation and every torch draw of training (dropout masks): equal seeds give
        equal results on the CPU, and fitting leaves torch's global generators alone.
    num_negative_samples: int
        Negatives per position for 'adaptive_hinge'; shared negatives per batch for
        'sampled_softmax'.
    device: 'auto', 'cpu', 'cuda' or a torch.device
        'auto' takes CUDA when present. ``use_cuda`` (Spotlight's) is accepted instead.
    exclude_preceding: bool
        'softmax' and 'sampled_softmax' only: leave the items a sequence has already
        shown out of each position's candidates (never the position's own target), as
        the evaluation does with ``exclude_preceding=True``; the loss then does not
        spend itself pushing down items the ranking will drop anyway. Default False.
    precision: str
        'float32' (the default) or 'bfloat16': training under ``torch.autocast`` with
        bfloat16 matmuls (weights, optimizer and evaluation stay float32).
    item_chunk_size: int, optional
        'softmax' only: score this many items at a time, the log-sum-exp carried across
        chunks and each chunk recomputed in the backward pass, so that a batch never
        holds (positions x all items) scores: for large catalogues, at the cost of a
        second scoring pass. None (default) scores all items at once.
    use_cuda: bool, optional
        Spotlight's flag, instead of ``device``.

    Raises
    ------
    ValueError
        An unknown loss, representation or precision, a representation argument the
        representation does not take, a size or rate out of range (each named with its
        value).
    """

    def __init__(
        self,
        loss: str = "pointwise",
        representation="pooling",
        embedding_dim: int = 32,
        n_iter: int = 10,
        batch_size: int = 256,
        l2: float = 0.0,
        learning_rate: float = 1e-2,
        optimizer_func=None,
        use_cuda: bool | None = None,
        sparse: bool = False,
        random_state=None,
        num_negative_samples: int = 5,
        device="auto",
        representation_kwargs: dict | None = None,
        exclude_preceding: bool = False,
        precision: str = "float32",
        item_chunk_size: int | None = None,
    ) -> None:
        check_constructor_arguments(
            loss=loss,
            representation=representation,
            representation_kwargs=representation_kwargs,
            n_iter=n_iter,
            batch_size=batch_size,
            embedding_dim=embedding_dim,
            num_negative_samples=num_negative_samples,
            learning_rate=learning_rate,
            l2=l2,
            exclude_preceding=exclude_preceding,
            precision=precision,
            item_chunk_size=item_chunk_size,
        )
        self._loss = loss
        self._loss_func = LOSSES[loss]
        self._representation = representation
        self._representation_kwargs = dict(representation_kwargs or {})
        self._embedding_dim = int(embedding_dim)
        self._n_iter = int(n_iter)
        self._batch_size = int(batch_size)
        self._l2 = float(l2)
        self._learning_rate = float(learning_rate)
        self._optimizer_func = optimizer_func
        self._sparse = sparse
        self._num_negative_samples = int(num_negative_samples)
        self._exclude_preceding = bool(exclude_preceding)
        self._precision = precision
        self._item_chunk_size = None if item_chunk_size is None else int(item_chunk_size)
        self._device = device_for(device, use_cuda)
        if random_state is None or isinstance(random_state, (int, np.integer)):
            random_state = np.random.RandomState(random_state)
        self._random_state = random_state
        self._num_items = None
        self._net = None
        self._optimizer = None
        self._torch_seed = None
        self._torch_state = None

    def __repr__(self) -> str:
        net = "uninitialised" if self._net is None else repr(self._net)
        return f"<ImplicitSequenceModel: loss={self._loss!r}, net={net}>"

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def net(self):
        """The representation (None before the first :meth:`fit`)."""
        return self._net

    def _initialized(self) -> bool:
        return self._net is not None

    def config(self) -> dict:
        """The constructor arguments that rebuild this model (no optimizer_func)."""
        if not isinstance(self._representation, str):
            raise ValueError(
                "a model built on a representation instance has no configuration to save; "
                "pass the representation by name with representation_kwargs"
            )
        return dict(
            loss=self._loss,
            representation=self._representation,
            representation_kwargs=self._representation_kwargs,
            exclude_preceding=self._exclude_preceding,
            precision=self._precision,
            item_chunk_size=self._item_chunk_size,
            embedding_dim=self._embedding_dim,
            n_iter=self._n_iter,
            batch_size=self._batch_size,
            l2=self._l2,
            learning_rate=self._learning_rate,
            sparse=self._sparse,
            num_negative_samples=self._num_negative_samples,
        )

    def _initialize(self, num_items: int) -> None:
        self._num_items = int(num_items)
        # A seed for the initialisation from a copy of random_state (equal seeds give equal
        # weights, and the stream that shuffles and samples stays Spotlight's), and from it
        # the seed of training's own torch draws (dropout).
        seed = int(copy.deepcopy(self._random_state).randint(2**31 - 1))
        torch_seed = int(np.random.RandomState(seed).randint(2**31 - 1))
        self._torch_random = CarriedGenerator(torch_seed, self._device)
        if isinstance(self._representation, str):
            cls = REPRESENTATIONS[self._representation]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._net = cls(
                    self._num_items,
                    self._embedding_dim,
                    sparse=self._sparse,
                    **self._representation_kwargs,
                )
        else:
            self._net = self._representation
        self._net = self._net.to(self._device)
        optimizer_func = self._optimizer_func or torch.optim.Adam
        self._optimizer = optimizer_func(
            self._net.parameters(), weight_decay=self._l2, lr=self._learning_rate
        )

    def _check_sequences(self, sequences: np.ndarray, name: str = "sequences") -> None:
        if sequences.ndim != 2 or sequences.shape[0] == 0 or sequences.shape[1] == 0:
            raise ValueError(f"{name}: expected a non-empty 2-D array, got shape {sequences.shape}")
        low, high = int(sequences.min()), int(sequences.max())
        if low < 0 or high >= self._num_items:
            raise ValueError(
                f"{name}: item ids must be in [0, {self._num_items}) (the model's num_items), "
                f"got ids from {low} to {high}"
            )

    def fit(
        self, interactions: SequenceInteractions, verbose: bool = False, callback=None
    ) -> list[float]:
        """Train for ``n_iter`` epochs; a repeated call continues training.

        ``callback(epoch, loss)``, if given, runs after each epoch (epoch counted from 0
        within this call); training stops early when it returns True.

        Each epoch shuffles the sequences with ``random_state``, and each minibatch scores
        every position's next item against negatives drawn uniformly over
        [0, num_items) with ``random_state``; padded positions are masked out of the loss.

        Returns
        -------
        The mean minibatch loss of each epoch of this call.

        Raises
        ------
        ValueError on empty or out-of-range input (a first fit that fails so leaves the
        model unfitted), and on a NaN or zero epoch loss.
        """
        if not isinstance(interactions, SequenceInteractions):
            raise ValueError(
                f"fit expects SequenceInteractions (Interactions.to_sequence), got "
                f"{type(interactions).__name__}"
            )
        sequences = interactions.sequences.astype(np.int64)
        if (
            sequences.shape[0] == 0 or sequences.shape[1] == 0
        ):  # before a net is built for this data
            raise ValueError(
                f"sequences: expected a non-empty 2-D array, got shape {sequences.shape}"
            )
        fresh = not self._initialized()
        if fresh:
            self._initialize(interactions.num_items)
        try:
            self._check_sequences(sequences)
        except ValueError:
            if fresh:  # no net built for data that was refused: the next data starts afresh
                self._net = self._optimizer = self._num_items = None
            raise
        try:
            with self._torch_random.active():
                return self._fit_epochs(sequences, verbose, callback)
        finally:
            full_softmax.release_buffers()  # the batches' reused buffers go back

    def _fit_epochs(self, sequences: np.ndarray, verbose: bool, callback) -> list[float]:
        # The whole dataset goes to the device once; batches are index gathers there.
        sequences_tensor = torch.from_numpy(sequences).to(self._device)
        losses = []
        epochs = tqdm(range(self._n_iter), desc="epochs", disable=not verbose, unit="epoch")
        for _ in epochs:
            self._net.train(True)  # a callback may have evaluated the model
            order = np.arange(len(sequences))
            self._random_state.shuffle(order)
            order = torch.from_numpy(order).to(self._device)
            starts = range(0, len(order), self._batch_size)
            batches = tqdm(starts, desc="batches", disable=not verbose, leave=False, unit="batch")
            epoch_loss = 0.0
            for count, start in enumerate(batches, start=1):
                batch = sequences_tensor[order[start : start + self._batch_size]]
                with torch.autocast(
                    self._device.type,
                    dtype=PRECISIONS[self._precision],
                    enabled=self._precision != "float32",
                ):
                    loss = self._batch_loss(batch)
                self._optimizer.zero_grad()
                loss.backward()
                self._optimizer.step()
                epoch_loss += loss.item()
                batches.set_postfix(loss=f"{epoch_loss / count:.4f}")
            epoch_loss /= count
            losses.append(epoch_loss)
            full_softmax.release_buffers()  # not held through a callback's evaluation
            epochs.set_postfix(loss=f"{epoch_loss:.4f}")
            if np.isnan(epoch_loss) or epoch_loss == 0.0:
                raise ValueError(f"degenerate epoch loss: {epoch_loss}")
            if callback is not None and callback(len(losses) - 1, epoch_loss):
                break
        epochs.close()
        return losses

    def _batch_loss(self, batch: torch.Tensor) -> torch.Tensor:
        user_representation, _ = self._net.user_representation(batch)
        return self._loss_func.compute(
            LossInput(
                net=self._net,
                sequences=batch,
                user_representation=user_representation,
                num_items=self._num_items,
                num_negative_samples=self._num_negative_samples,
                negatives=self._negatives,
                random_state=self._random_state,
                exclude_preceding=self._exclude_preceding,
                item_chunk_size=self._item_chunk_size,
            )
        )

    def _negatives(self, shape) -> torch.Tensor:
        items = sample_items(self._num_items, shape, self._random_state)
        return torch.from_numpy(items).to(self._device)

    # ------------------------------------------------------------------ prediction

    def _require_fit(self) -> None:
        if not self._initialized():
            raise ValueError("the model has not been fitted (call fit first, or load)")

    def _as_batch(self, sequences) -> tuple[np.ndarray, bool]:
        array = np.asarray(sequences)
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"sequences: expected integer item ids, got dtype {array.dtype}")
        single = array.ndim == 1
        array = np.atleast_2d(array).astype(np.int64)
        self._check_sequences(array)
        return array, single

    @torch.no_grad()
    def score_sequences(self, sequences: torch.Tensor) -> torch.Tensor:
        """Scores (B, num_items) of every item after each sequence (a tensor of item
        ids on the model's device), in one pass of the representation."""
        self._net.train(False)
        _, final = self._net.user_representation(sequences)
        if isinstance(self._net, ScoresItems):
            return self._net.score_all(final)
        # A representation from elsewhere: Spotlight's call, one sequence at a time.
        items = torch.arange(self._num_items, device=final.device).unsqueeze(1)
        return torch.stack(
            [self._net(row.expand(self._num_items, -1), items).reshape(-1) for row in final]
        )

    def predict(self, sequences, item_ids=None) -> np.ndarray:
        """Scores of items to come after one sequence (1-D: returns (num_items,) or
        (len(item_ids),)) or after each of a batch (2-D: returns (B, ...))."""
        self._require_fit()
        array, single = self._as_batch(sequences)
        scores = self.score_sequences(torch.from_numpy(array).to(self._device))
        if item_ids is not None:
            item_ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
            if item_ids.size and (item_ids.min() < 0 or item_ids.max() >= self._num_items):
                raise ValueError(
                    f"item_ids must be in [0, {self._num_items}), got {item_ids.min()} to "
                    f"{item_ids.max()}"
                )
            scores = scores[:, torch.from_numpy(item_ids).to(scores.device)]
        scores = scores.cpu().numpy()
        return scores[0] if single else scores

    def recommend(self, sequence, k: int = 10, exclude_seen: bool = True) -> np.ndarray:
        """The ``k`` best item ids (best first) to follow ``sequence``, never the padding
        id 0 and, with ``exclude_seen``, none of the sequence's items."""
        self._require_fit()
        array, single = self._as_batch(sequence)
        if not single:
            raise ValueError(f"recommend takes one 1-D sequence, got shape {np.shape(sequence)}")
        if (
            isinstance(k, bool)
            or not isinstance(k, (int, np.integer))
            or not 1 <= k <= self._num_items - 1
        ):
            raise ValueError(f"k must be an integer in [1, {self._num_items - 1}], got {k!r}")
        sequence_tensor = torch.from_numpy(array).to(self._device)
        scores = self.score_sequences(sequence_tensor)[0]
        scores[PADDING_IDX] = -torch.inf
        if exclude_seen:
            scores[sequence_tensor[0]] = -torch.inf
        k = min(k, int(torch.isfinite(scores).sum()))
        return scores.topk(k).indices.cpu().numpy()

    # ------------------------------------------------------------------ persistence

    def save(self, path) -> None:
        """Write configuration, weights and optimizer state to ``path`` atomically (a
        plain dict of tensors and numbers, loadable with ``weights_only=True``)."""
        self._require_fit()
        checkpoint.write(
            path,
            {
                "config": self.config(),
                "num_items": self._num_items,
                "net": self._net.state_dict(),
                "optimizer": self._optimizer.state_dict(),
            },
        )

    @classmethod
    def load(cls, path, device="auto", random_state=None) -> ImplicitSequenceModel:
        """Rebuild a model written by :meth:`save` (default Adam optimizer)."""
        state = checkpoint.read(path, set(inspect.signature(cls).parameters))
        try:
            model = cls(**state["config"], device=device, random_state=random_state)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: the saved configuration is refused ({checkpoint.first_line(error)})"
            ) from error
        try:
            model._initialize(state["num_items"])
            model._net.load_state_dict(state["net"])
            model._optimizer.load_state_dict(state["optimizer"])
        except (TypeError, ValueError, RuntimeError, KeyError) as error:
            raise ValueError(
                f"{path}: the saved weights do not fit the saved configuration "
                f"({type(error).__name__}: {checkpoint.first_line(error)})"
            ) from error
        return model
