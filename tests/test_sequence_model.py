import numpy as np
import pytest
import torch

from mlstm4reco.cross_validation import user_based_train_test_split
from mlstm4reco.datasets import get_synthetic_dataset
from mlstm4reco.evaluation import sequence_mrr_score
from mlstm4reco.interactions import SequenceInteractions
from mlstm4reco.losses import LOSSES
from mlstm4reco.representations import MLSTMNet
from mlstm4reco.sequence_model import REPRESENTATIONS, ImplicitSequenceModel


@pytest.fixture(scope="module")
def synthetic():
    data = get_synthetic_dataset(
        num_users=200, num_items=50, num_interactions=20_000, random_state=0
    )
    train, test = user_based_train_test_split(data, 0.2, np.random.RandomState(1))
    return train.to_sequence(20, 5, 20), test.to_sequence(20, 5, 20)


def random_mrr(num_items):
    # Expected reciprocal rank of a uniformly random ranking of num_items items.
    return np.mean(1.0 / np.arange(1, num_items + 1))


@pytest.mark.parametrize(
    "representation,loss,factor",
    [
        ("lstm", "adaptive_hinge", 3),
        ("mlstm", "adaptive_hinge", 3),
        ("cnn", "adaptive_hinge", 3),
        ("mixture", "adaptive_hinge", 3),
        ("mixture_mlstm", "adaptive_hinge", 3),
        ("sasrec", "softmax", 3),  # cross-entropy: the loss SASRec is best known with
        ("sasrec", "adaptive_hinge", 3),
        # An average cannot see order, and the chain is all order: pooling learns which items
        # a user circles among, not which comes next (adaptive hinge barely moves it).
        ("pooling", "bpr", 1.4),
    ],
)
def test_fit_learns_the_markov_chain(synthetic, representation, loss, factor):
    train, test = synthetic
    model = ImplicitSequenceModel(
        loss=loss,
        representation=representation,
        embedding_dim=32,
        n_iter=8,
        batch_size=64,
        learning_rate=1e-2,
        random_state=0,
    )
    losses = model.fit(train)
    assert losses[-1] < 0.8 * losses[0]
    mrr = sequence_mrr_score(model, test).mean()
    assert mrr > factor * random_mrr(50)  # random ranking: ~0.09; sequence models: > 0.4


@pytest.mark.parametrize(
    "loss", ["pointwise", "bpr", "hinge", "adaptive_hinge", "softmax", "sampled_softmax"]
)
@pytest.mark.parametrize("representation", ["mlstm", "mixture"])
def test_every_loss_trains(synthetic, loss, representation):
    train, _ = synthetic
    model = ImplicitSequenceModel(
        loss=loss,
        representation=representation,
        embedding_dim=8,
        n_iter=3,
        batch_size=128,
        random_state=0,
        num_negative_samples=10,
    )
    losses = model.fit(train)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "representation,exclude",
    [("mlstm", False), ("mixture_mlstm", False), ("mlstm", True), ("mixture_mlstm", True)],
)
def test_softmax_loss_matches_a_loop_over_positions(synthetic, representation, exclude):
    """The batched full-softmax loss equals, position by position, cross-entropy of the
    net's own one-item scores (Spotlight's call) over item ids 1..N-1, padding skipped;
    with exclude_preceding, over the ids not seen earlier in the sequence, plus the target."""
    train, _ = synthetic
    model = ImplicitSequenceModel(
        loss="softmax",
        representation=representation,
        embedding_dim=8,
        n_iter=1,
        batch_size=128,
        random_state=0,
        exclude_preceding=exclude,
    )
    model.fit(train)
    batch = torch.from_numpy(train.sequences[:5].astype(np.int64))
    batch[0, :7] = 0  # some padding
    batch[1, 12] = batch[1, 4]  # a repeated item is still its position's target
    net = model._net
    with torch.no_grad():
        net.train(False)
        loss = model._batch_loss(batch).item()
        representation_, _ = net.user_representation(batch)
        terms = []
        for b in range(batch.shape[0]):
            for t in range(batch.shape[1]):
                target = batch[b, t].item()
                if target == 0:
                    continue
                earlier = set(batch[b, :t].tolist()) - {target} if exclude else set()
                items = [i for i in range(1, train.num_items) if i not in earlier]
                state = representation_[b : b + 1, ..., t : t + 1]  # this position's state
                scores = torch.stack([net(state, torch.tensor([[i]])).reshape(()) for i in items])
                terms.append(torch.logsumexp(scores, 0) - scores[items.index(target)])
    assert loss == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_sampled_softmax_leaves_out_preceding_items(synthetic, monkeypatch):
    """With exclude_preceding, a sampled item seen earlier in the sequence is left out of a
    position's negatives like an accidental hit."""
    from mlstm4reco import losses

    train, _ = synthetic
    model = ImplicitSequenceModel(
        loss="sampled_softmax",
        representation="mlstm",
        embedding_dim=8,
        n_iter=1,
        batch_size=128,
        random_state=0,
        num_negative_samples=7,
        exclude_preceding=True,
    )
    model.fit(train)
    captured = {}
    original = losses.sampled_softmax_loss
    monkeypatch.setattr(
        losses,
        "sampled_softmax_loss",
        lambda p, n, hits: captured.setdefault("hits", hits) is None or original(p, n, hits),
    )
    batch = torch.from_numpy(train.sequences[:3].astype(np.int64))
    state = model._random_state.get_state()
    model._batch_loss(batch)
    model._random_state.set_state(state)
    samples = model._random_state.randint(1, train.num_items, 7)
    expected = [
        [s == batch[b, t].item() or (s in batch[b, :t].tolist()) for s in samples]
        for b in range(3)
        for t in range(batch.shape[1])
        if batch[b, t] != 0
    ]
    np.testing.assert_array_equal(captured["hits"].numpy(), np.array(expected))


@pytest.mark.parametrize(
    "representation,loss,rounded",
    [
        ("lstm", "adaptive_hinge", True),
        ("mlstm", "softmax", True),
        ("cnn", "bpr", True),
        ("pooling", "sampled_softmax", True),
        ("mixture_mlstm", "softmax", True),
        # The mLSTM recurrence stays float32 and Spotlight's losses score items one by one
        # (no matmul): nothing is left for bfloat16.
        ("mlstm", "adaptive_hinge", False),
    ],
)
def test_bfloat16_training(synthetic, representation, loss, rounded):
    """precision='bfloat16' trains; on the same weights and batch its loss differs from the
    float32 loss by bfloat16 rounding only (and does differ where a matmul is left to
    autocast); prediction stays float32."""
    train, test = synthetic
    model = ImplicitSequenceModel(
        loss=loss,
        representation=representation,
        embedding_dim=16,
        n_iter=3,
        batch_size=64,
        learning_rate=1e-2,
        random_state=0,
        num_negative_samples=10,
        precision="bfloat16",
    )
    losses = model.fit(train)
    assert losses[-1] < losses[0]
    batch = torch.from_numpy(train.sequences[:64].astype(np.int64))
    state = model._random_state.get_state()
    with torch.no_grad():
        model.net.train(False)
        full = model._batch_loss(batch).item()
        model._random_state.set_state(state)  # the same negatives
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model._batch_loss(batch).item()
    if representation == "lstm" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        rounded = (
            False  # nn.LSTM leaves autocast on this CPU (representations.recurrent_leaves_autocast)
        )
    assert (low != full) == rounded and low == pytest.approx(full, rel=3e-2)
    assert model.predict(test.sequences[0]).dtype == np.float32
    assert model.config()["precision"] == "bfloat16"


def test_same_seed_same_result_and_repeated_fit_continues(synthetic):
    train, test = synthetic

    def make():
        return ImplicitSequenceModel(
            representation="mlstm",
            embedding_dim=8,
            n_iter=2,
            batch_size=128,
            random_state=7,
        )

    a, b = make(), make()
    a.fit(train)
    b.fit(train)
    np.testing.assert_array_equal(sequence_mrr_score(a, test), sequence_mrr_score(b, test))
    before = a.predict(test.sequences[0])
    more = a.fit(train)
    assert len(more) == 2 and not np.allclose(before, a.predict(test.sequences[0]))
    c = ImplicitSequenceModel(
        representation="mlstm", embedding_dim=8, n_iter=2, batch_size=128, random_state=8
    )
    c.fit(train)
    assert not np.array_equal(sequence_mrr_score(c, test), sequence_mrr_score(b, test))


def test_negatives_are_drawn_as_spotlight_does(synthetic, monkeypatch):
    """Per epoch a shuffle, then per batch one draw of shape (n * B, T) over [0, num_items),
    all from random_state, in Spotlight's order."""
    train, _ = synthetic
    model = ImplicitSequenceModel(
        loss="adaptive_hinge",
        representation="lstm",
        embedding_dim=4,
        n_iter=1,
        batch_size=300,
        num_negative_samples=3,
        random_state=5,
    )
    drawn = []
    original = model._negatives

    def record(shape):
        items = original(shape)
        drawn.append(items.cpu().numpy())
        return items

    monkeypatch.setattr(model, "_negatives", record)
    model.fit(train)
    replay = np.random.RandomState(5)
    replay.shuffle(np.arange(len(train)))
    sizes = [min(300, len(train) - start) for start in range(0, len(train), 300)]
    assert [d.shape for d in drawn] == [(3 * size, 20) for size in sizes]
    for batch in drawn:
        np.testing.assert_array_equal(batch, replay.randint(0, 50, batch.shape, dtype=np.int64))


@pytest.mark.parametrize(
    "representation,kwargs",
    [
        ("mlstm", {"state": "cell"}),
        ("cnn", {"num_layers": 2, "dilation": [1, 2]}),
        ("mixture_mlstm", {"num_components": 3}),
        ("sasrec", {"num_blocks": 2, "num_heads": 2, "max_length": 20, "dropout": 0.2}),
    ],
)
def test_save_load_round_trip(synthetic, tmp_path, representation, kwargs):
    train, test = synthetic
    model = ImplicitSequenceModel(
        representation=representation,
        representation_kwargs=kwargs,
        embedding_dim=8,
        n_iter=1,
        batch_size=128,
        random_state=0,
    )
    model.fit(train)
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = ImplicitSequenceModel.load(path)
    assert type(loaded.net) is type(model.net)
    np.testing.assert_array_equal(
        loaded.predict(test.sequences[:5]), model.predict(test.sequences[:5])
    )
    assert loaded.fit(train)  # training continues from the saved optimizer state
    with pytest.raises(FileNotFoundError, match="no saved model"):
        ImplicitSequenceModel.load(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    other = tmp_path / "other.pt"
    torch.save([1, 2], other)
    for bad, reason in ((truncated, r"\(.+\)"), (other, r"\(it holds a list\)")):
        with pytest.raises(
            ValueError, match=f"{bad}: not a model written by ImplicitSequenceModel.save {reason}"
        ):
            ImplicitSequenceModel.load(bad)


def test_predict_and_recommend(synthetic):
    train, test = synthetic
    model = ImplicitSequenceModel(representation="lstm", embedding_dim=8, n_iter=1, random_state=0)
    model.fit(train)
    sequence = test.sequences[0]
    scores = model.predict(sequence)
    assert scores.shape == (50,)
    np.testing.assert_allclose(model.predict(test.sequences[:3])[0], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(sequence, item_ids=[3, 7]), scores[[3, 7]])
    top = model.recommend(sequence, k=5)
    assert len(top) == 5 and 0 not in top and not set(top) & set(sequence.tolist())
    allowed = np.setdiff1d(np.arange(1, 50), sequence)
    expected = allowed[np.argsort(-scores[allowed], kind="stable")[:5]]
    assert set(top) == set(expected)


def test_callback_stops_training(synthetic):
    train, _ = synthetic
    seen = []
    model = ImplicitSequenceModel(n_iter=10, embedding_dim=4, random_state=0)
    losses = model.fit(train, callback=lambda epoch, loss: seen.append((epoch, loss)) or epoch == 2)
    assert [e for e, _ in seen] == [0, 1, 2] and [value for _, value in seen] == losses
    # Training mode (dropout) comes back after a callback that evaluated the model.
    modes = []
    model = ImplicitSequenceModel(
        n_iter=2, embedding_dim=4, random_state=0, representation_kwargs={"dropout": 0.5}
    )
    original = model._batch_loss
    model._batch_loss = lambda batch: modes.append(model.net.training) or original(batch)
    model.fit(train, callback=lambda epoch, loss: model.predict([1, 2, 3]) is None)
    assert all(modes)


def test_a_representation_instance_is_used_as_given(synthetic):
    train, _ = synthetic
    net = MLSTMNet(50, 8, state="cell")
    model = ImplicitSequenceModel(representation=net, n_iter=1, random_state=0)
    model.fit(train)
    assert model.net is net
    with pytest.raises(ValueError, match="representation instance has no configuration"):
        model.save("unused.pt")


def test_bad_input(synthetic):
    train, _ = synthetic
    with pytest.raises(ValueError, match="unknown loss 'warp'"):
        ImplicitSequenceModel(loss="warp")
    with pytest.raises(ValueError, match="unknown representation 'transformer'"):
        ImplicitSequenceModel(representation="transformer")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        ImplicitSequenceModel(batch_size=0)
    with pytest.raises(
        ValueError, match="exclude_preceding needs loss 'softmax' or 'sampled_softmax', not 'bpr'"
    ):
        ImplicitSequenceModel(loss="bpr", exclude_preceding=True)
    with pytest.raises(ValueError, match="precision must be one of .*, got 'float16'"):
        ImplicitSequenceModel(precision="float16")
    for bad in (0, -1e-3, float("nan"), "0.01", True):
        with pytest.raises(
            ValueError, match=f"learning_rate must be a positive number, got {bad!r}"
        ):
            ImplicitSequenceModel(learning_rate=bad)
    for bad in (-1e-6, float("nan"), None):
        with pytest.raises(ValueError, match=f"l2 must be a non-negative number, got {bad!r}"):
            ImplicitSequenceModel(l2=bad)
    ImplicitSequenceModel(learning_rate=np.float32(1e-3), l2=0)
    model = ImplicitSequenceModel(n_iter=1, embedding_dim=4, random_state=0)
    with pytest.raises(ValueError, match="expects SequenceInteractions"):
        model.fit(train.sequences)
    with pytest.raises(ValueError, match="non-empty 2-D array"):
        model.fit(SequenceInteractions(np.zeros((0, 5), dtype=int), num_items=50))
    model.fit(train)
    with pytest.raises(ValueError, match=r"item ids must be in \[0, 50\) .* got ids from 1 to 60"):
        model.fit(SequenceInteractions(np.array([[1, 60]]), num_items=61))
    with pytest.raises(ValueError, match=r"item ids must be in \[0, 50\)"):
        model.predict([1, 2, 50])
    with pytest.raises(ValueError, match="the model has not been fitted"):
        ImplicitSequenceModel().predict([1, 2])
    for k in (0, 50, 2.5, True):
        with pytest.raises(ValueError, match=rf"k must be an integer in \[1, 49\], got {k!r}"):
            model.recommend([1, 2], k=k)
    assert len(model.recommend([1, 2], k=np.int64(3))) == 3


OPTIONS = {  # options each representation documents (README's table), with a value to set
    "lstm": dict(num_layers=2, dropout=0.1, tie_embeddings=False),
    "gru": dict(num_layers=2, dropout=0.1),
    "mlstm": dict(
        state="hidden",
        multiplicative_bias=False,
        num_layers=2,
        forget_bias=1.0,
        layer_norm=True,
        dropout=0.1,
        tie_embeddings=False,
        implementation="reference",
    ),
    "pooling": dict(dropout=0.1),
    "cnn": dict(
        kernel_width=2,
        num_layers=2,
        dilation=[1, 2],
        nonlinearity="relu",
        residual=True,
        dropout=0.1,
    ),
    "mixture": dict(num_components=3, num_layers=2, dropout=0.1),
    "mixture_mlstm": dict(num_components=3, state="hidden", forget_bias=1.0, dropout=0.1),
    "sasrec": dict(num_blocks=1, num_heads=2, max_length=50, norm_first=False, dropout=0.2),
}


@pytest.mark.parametrize("representation", sorted(REPRESENTATIONS))
def test_representation_kwargs_are_checked_at_construction(representation):
    """A name the representation does not take is refused when the model is built (not at
    the first fit, after the data is loaded), as the class itself would refuse it; every
    documented option still passes and builds."""
    options = OPTIONS[representation]
    model = ImplicitSequenceModel(
        representation=representation, representation_kwargs=options, embedding_dim=8
    )
    model._initialize(30)  # the options reach the class and build
    cls = REPRESENTATIONS[representation]
    with pytest.raises(TypeError):
        cls(30, 8, dropuot=0.1)  # what the first fit would have met
    with pytest.raises(
        ValueError,
        match=rf"representation '{representation}' \({cls.__name__}\) takes no "
        r"\['dropuot'\]; its representation_kwargs are \[.*'dropout'",
    ):
        ImplicitSequenceModel(
            representation=representation, representation_kwargs={**options, "dropuot": 0.1}
        )
    with pytest.raises(
        ValueError, match=r"representation_kwargs \['embedding_dim'\]: set by the model itself"
    ):
        ImplicitSequenceModel(
            representation=representation, representation_kwargs={"embedding_dim": 8}
        )
    with pytest.raises(TypeError, match="representation_kwargs must be a dict, got list"):
        ImplicitSequenceModel(representation=representation, representation_kwargs=["dropout"])


def test_degenerate_loss_raises(synthetic):
    train, _ = synthetic
    net = MLSTMNet(50, 4)
    with torch.no_grad():
        net.item_embeddings.weight.fill_(float("nan"))
    model = ImplicitSequenceModel(representation=net, n_iter=1, random_state=0)
    with pytest.raises(ValueError, match="degenerate epoch loss: nan"):
        model.fit(train)


def test_device_choice():
    assert ImplicitSequenceModel(device="cpu").device == torch.device("cpu")
    assert ImplicitSequenceModel(use_cuda=False).device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            ImplicitSequenceModel(use_cuda=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_and_evaluate(synthetic):
    train, test = synthetic
    model = ImplicitSequenceModel(representation="mlstm", n_iter=2, device="cuda", random_state=0)
    model.fit(train)
    assert sequence_mrr_score(model, test).mean() > random_mrr(50)


def weights(model):
    return {name: value.detach().clone() for name, value in model.net.state_dict().items()}


@pytest.mark.parametrize("representation", sorted(REPRESENTATIONS))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_same_seed_same_losses_and_weights_with_and_without_dropout(
    synthetic, representation, dropout
):
    """Every random draw of training comes from random_state: two fits with one seed give
    identical losses and weights, dropout included, whatever torch's global generator
    holds (and fitting leaves that generator alone); another seed gives others."""
    train, _ = synthetic
    small = SequenceInteractions(train.sequences[:256], num_items=train.num_items)

    def fit(seed, loss="adaptive_hinge"):
        model = ImplicitSequenceModel(
            loss=loss,
            representation=representation,
            embedding_dim=8,
            n_iter=2,
            batch_size=64,
            random_state=seed,
            num_negative_samples=3,
            representation_kwargs={"dropout": dropout},
        )
        torch.manual_seed(
            np.random.randint(1 << 30)
        )  # the global generator in another state each time
        before = torch.get_rng_state()
        losses = model.fit(small)
        assert torch.equal(torch.get_rng_state(), before)
        return losses, weights(model)

    for loss in sorted(LOSSES):
        (losses_a, weights_a), (losses_b, weights_b) = fit(3, loss), fit(3, loss)
        assert losses_a == losses_b
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    losses_c, _ = fit(4)
    assert losses_c != losses_a


def test_dropout_draws_go_on_across_fits_and_differ_from_no_dropout(synthetic):
    """A second fit continues the model's own stream (the same as one fit of both epochs'
    worth of calls), and dropout does draw: with it the losses differ from without."""
    train, _ = synthetic
    small = SequenceInteractions(train.sequences[:256], num_items=train.num_items)

    def model(dropout):
        return ImplicitSequenceModel(
            representation="mlstm",
            embedding_dim=8,
            n_iter=1,
            batch_size=64,
            random_state=5,
            representation_kwargs={"dropout": dropout},
        )

    a, b = model(0.3), model(0.3)
    first = a.fit(small) + a.fit(small)
    torch.manual_seed(123)  # between the two fits of b: must not matter
    second = b.fit(small)
    torch.manual_seed(456)
    second += b.fit(small)
    assert first == second
    assert model(0.0).fit(small) != model(0.3).fit(small)


def saved_model(synthetic, tmp_path):
    train, _ = synthetic
    model = ImplicitSequenceModel(
        representation="mlstm", embedding_dim=8, n_iter=1, batch_size=128, random_state=0
    )
    model.fit(train)
    path = tmp_path / "model.pt"
    model.save(path)
    return path, torch.load(path, weights_only=True)


@pytest.mark.parametrize(
    "tamper,message",
    [
        (
            lambda s: s.update(num_items=s["num_items"] + 3),
            r"the saved weights do not fit the saved configuration "
            r"\(RuntimeError: .*size mismatch",
        ),
        (
            lambda s: s["config"].update(colour="blue"),
            r"the saved config has arguments ImplicitSequenceModel does "
            r"not take: \['colour'\]",
        ),
        (lambda s: s.pop("net"), r"not a whole saved model: no \['net'\]"),
        (
            lambda s: s.update(num_items="many"),
            r"num_items must be an integer of at least 2, got 'many'",
        ),
        (lambda s: s.update(config=[1]), r"the saved config is a list, not a mapping"),
        (
            lambda s: s["config"].update(embedding_dim=-1),
            r"the saved configuration is refused \(embedding_dim must be a positive integer, got "
            r"-1\)",
        ),
    ],
)
def test_load_of_a_tampered_model_names_the_file(synthetic, tmp_path, tamper, message):
    path, state = saved_model(synthetic, tmp_path)
    tamper(state)
    torch.save(state, path)
    with pytest.raises(ValueError, match=str(path).replace(".", r"\.") + ": " + message):
        ImplicitSequenceModel.load(path)


def test_save_on_a_full_disk_names_the_file_and_keeps_the_old_one(synthetic, tmp_path, monkeypatch):
    path, _ = saved_model(synthetic, tmp_path)
    before = path.read_bytes()
    model = ImplicitSequenceModel.load(path)

    def full_disk(obj, f, *args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . unexpected pos 8896 vs 8828"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        OSError,
        match=str(path).replace(".", r"\.") + r": could not write the model "
        r"\(.*unexpected pos 8896 vs 8828\)",
    ):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_fit_refused_for_its_data_leaves_no_net_behind(synthetic):
    """A first fit on empty or out-of-range data builds no net for it: the next, real,
    data trains."""
    train, _ = synthetic
    model = ImplicitSequenceModel(representation="lstm", embedding_dim=8, n_iter=1, random_state=0)
    with pytest.raises(ValueError, match="non-empty"):
        model.fit(SequenceInteractions(np.zeros((0, 20), dtype=np.int32), num_items=5))
    assert model.net is None
    with pytest.raises(ValueError, match=r"item ids must be in \[0, 5\)"):
        model.fit(_out_of_range(train))
    assert model.net is None
    assert len(model.fit(train)) == 1 and model.net.num_items == train.num_items


def _out_of_range(train):
    """Sequences whose ids exceed the num_items they claim (as a hand-built object can)."""
    sequences = SequenceInteractions(train.sequences[:10], num_items=train.num_items)
    sequences.num_items = 5
    return sequences
